package gateway

import "sync"

const registryShards = 64

// registry holds every open connection, split in shards so the two cores do
// not fight over one lock.
type registry struct {
	shards [registryShards]struct {
		mu    sync.Mutex
		conns map[*conn]struct{}
	}
}

func (r *registry) init() {
	for i := range r.shards {
		r.shards[i].conns = make(map[*conn]struct{})
	}
}

func (r *registry) add(c *conn) {
	s := &r.shards[c.seq%registryShards]
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (r *registry) remove(c *conn) {
	s := &r.shards[c.seq%registryShards]
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (r *registry) count() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.conns)
		s.mu.Unlock()
	}
	return n
}

// each calls f for every connection; f must not call add or remove. It
// copies a shard's members before calling f so f may take conn locks.
func (r *registry) each(f func(*conn)) {
	var batch []*conn
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		batch = batch[:0]
		for c := range s.conns {
			batch = append(batch, c)
		}
		s.mu.Unlock()
		for _, c := range batch {
			f(c)
		}
	}
}
