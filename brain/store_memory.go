package brain

import (
	"context"
	"sort"
	"sync"
)

// MemoryStore is the single-node Store: everything in one process's
// memory, under one lock. It is safe for concurrent use.
//
// Lock contract: mu guards every field; Apply and RemoveNode take it for
// writing for their whole run (that is their atomicity), readers for
// reading.
type MemoryStore struct {
	mu     sync.RWMutex
	rooms  map[roomKey]*memRoom
	nodes  map[string]*memNode
	closed bool
}

var _ Store = (*MemoryStore)(nil)

type roomKey struct{ tenant, subject string }

// memRoom is one room's members: by session, the sessions in order (for
// paging) and how many sessions each user has (so Count is O(1)).
type memRoom struct {
	members map[string]*Member
	order   sortedStrings
	users   map[string]int
}

// memNode is a node's record and its members (room -> session ->
// snapshot generation).
type memNode struct {
	epoch, seq, syncGen uint64
	count               int
	rooms               map[roomKey]map[string]uint64
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{rooms: make(map[roomKey]*memRoom), nodes: make(map[string]*memNode)}
}

// Apply implements Store.
func (s *MemoryStore) Apply(ctx context.Context, b *Batch) (Result, error) {
	if err := b.validate(); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Result{}, ErrClosed
	}
	n := s.nodes[b.Node]
	if n == nil {
		n = &memNode{epoch: b.Epoch, rooms: make(map[roomKey]map[string]uint64)}
		s.nodes[b.Node] = n
	}
	switch {
	case b.Epoch < n.epoch:
		return Result{Status: StaleEpoch}, nil
	case b.Epoch > n.epoch:
		if n.count > 0 {
			return Result{Status: EpochChanged, OldEpoch: n.epoch}, nil
		}
		n.epoch, n.seq, n.syncGen = b.Epoch, 0, 0
	}
	var res Result
	if b.Sync != 0 {
		if n.seq >= b.Sync || b.Sync < n.syncGen {
			return Result{Status: Duplicate}, nil
		}
		n.syncGen = b.Sync
		for i := range b.Ops {
			s.join(&res, b, n, &b.Ops[i].Member, b.Sync)
		}
		if b.SyncEnd {
			s.sweep(&res, b.Node, n, b.Sync)
			n.seq = b.Sync
		}
		return res, nil
	}
	// As the merged batches b.first()..b.Seq one after another: those
	// at or below the applied seq (or a snapshot in progress) are
	// duplicates; the first one beyond seq+1 is a gap.
	switch {
	case b.Seq <= n.seq, n.syncGen > n.seq && b.Seq <= n.syncGen:
		return Result{Status: Duplicate}, nil
	case n.syncGen > n.seq, b.first() > n.seq+1:
		return Result{Status: Gap}, nil
	}
	for i := b.skipThrough(n.seq); i < len(b.Ops); i++ {
		op := &b.Ops[i]
		if op.Leave {
			s.leave(&res, b.Node, &op.Member, op.Reason)
		} else {
			s.join(&res, b, n, &op.Member, 0)
		}
	}
	n.seq = b.Seq
	return res, nil
}

// join upserts m as a member of node b.Node (n). gen is the snapshot
// generation, or 0 for a regular join (which keeps an existing member's).
// Assumes the write lock is held.
func (s *MemoryStore) join(res *Result, b *Batch, n *memNode, in *Member, gen uint64) {
	k := roomKey{in.Tenant, in.Subject}
	r := s.rooms[k]
	if r == nil {
		r = &memRoom{members: make(map[string]*Member), users: make(map[string]int)}
		s.rooms[k] = r
	}
	m := *in
	m.Node, m.Epoch = b.Node, b.Epoch
	if len(m.Info) == 0 {
		m.Info = nil
	} else {
		m.Info = append([]byte(nil), m.Info...)
	}
	old := r.members[m.Session]
	if old != nil {
		if old.Node != m.Node { // another node's session: move it
			s.unindex(old)
		} else if gen == 0 {
			gen = n.rooms[k][m.Session]
		}
		if old.User != m.User {
			r.decUser(old.User)
			r.users[m.User]++
		}
		*old = m
	} else {
		r.members[m.Session] = &m
		r.order.insert(m.Session)
		r.users[m.User]++
		res.Joined = append(res.Joined, m)
	}
	idx := n.rooms[k]
	if idx == nil {
		idx = make(map[string]uint64)
		n.rooms[k] = idx
	}
	if _, ok := idx[m.Session]; !ok {
		n.count++
	}
	idx[m.Session] = gen
}

// leave removes the member in (Tenant, Subject, Session) if node has it.
// Assumes the write lock is held.
func (s *MemoryStore) leave(res *Result, node string, in *Member, reason string) {
	r := s.rooms[roomKey{in.Tenant, in.Subject}]
	if r == nil {
		return
	}
	m := r.members[in.Session]
	if m == nil || m.Node != node {
		return
	}
	s.remove(r, m)
	res.Left = append(res.Left, *m)
	res.LeftReasons = append(res.LeftReasons, reason)
}

// remove deletes m from its room r and its node's index. Assumes the write
// lock is held.
func (s *MemoryStore) remove(r *memRoom, m *Member) {
	delete(r.members, m.Session)
	r.order.remove(m.Session)
	r.decUser(m.User)
	if len(r.members) == 0 {
		delete(s.rooms, roomKey{m.Tenant, m.Subject})
	}
	s.unindex(m)
}

// unindex deletes m from its node's index. Assumes the write lock is held.
func (s *MemoryStore) unindex(m *Member) {
	n := s.nodes[m.Node]
	if n == nil {
		return
	}
	k := roomKey{m.Tenant, m.Subject}
	idx := n.rooms[k]
	if _, ok := idx[m.Session]; !ok {
		return
	}
	delete(idx, m.Session)
	n.count--
	if len(idx) == 0 {
		delete(n.rooms, k)
	}
}

// sweep removes node's members whose generation is not gen. Assumes the
// write lock is held.
func (s *MemoryStore) sweep(res *Result, node string, n *memNode, gen uint64) {
	var stale []*Member
	for k, idx := range n.rooms {
		r := s.rooms[k]
		for sess, g := range idx {
			if g != gen {
				stale = append(stale, r.members[sess])
			}
		}
	}
	sort.Slice(stale, func(i, j int) bool { return memberLess(stale[i], stale[j]) })
	for _, m := range stale {
		s.remove(s.rooms[roomKey{m.Tenant, m.Subject}], m)
		res.Left = append(res.Left, *m)
		res.LeftReasons = append(res.LeftReasons, ReasonSync)
	}
}

func memberLess(a, b *Member) bool {
	if a.Tenant != b.Tenant {
		return a.Tenant < b.Tenant
	}
	if a.Subject != b.Subject {
		return a.Subject < b.Subject
	}
	return a.Session < b.Session
}

func (r *memRoom) decUser(u string) {
	if c := r.users[u]; c <= 1 {
		delete(r.users, u)
	} else {
		r.users[u] = c - 1
	}
}

// RemoveNode implements Store. limit <= 0 means DefaultPageLimit.
func (s *MemoryStore) RemoveNode(ctx context.Context, node string, epoch uint64, limit int) ([]Member, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		limit = DefaultPageLimit
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	n := s.nodes[node]
	if n == nil {
		return nil, true, nil
	}
	if n.epoch > epoch { // every member has the stored epoch
		return nil, true, nil
	}
	var left []Member
	for k, idx := range n.rooms {
		r := s.rooms[k]
		for sess := range idx {
			if len(left) == limit {
				return left, false, nil
			}
			m := r.members[sess]
			s.remove(r, m)
			left = append(left, *m)
		}
	}
	delete(s.nodes, node)
	return left, true, nil
}

// Nodes implements Store.
func (s *MemoryStore) Nodes(ctx context.Context) ([]Node, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := make([]Node, 0, len(s.nodes))
	for id, n := range s.nodes {
		out = append(out, Node{ID: id, Epoch: n.epoch, Seq: n.seq, Members: n.count})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Members implements Store. limit <= 0 means DefaultPageLimit.
func (s *MemoryStore) Members(ctx context.Context, tenant, subject, cursor string, limit int) ([]Member, string, error) {
	if limit <= 0 {
		limit = DefaultPageLimit
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, "", ErrClosed
	}
	r := s.rooms[roomKey{tenant, subject}]
	if r == nil {
		return nil, "", nil
	}
	out := make([]Member, 0, min(limit, len(r.members)))
	next := ""
	r.order.after(cursor, func(sess string) bool {
		if len(out) == limit {
			next = out[len(out)-1].Session
			return false
		}
		m := *r.members[sess]
		m.Info = append([]byte(nil), m.Info...)
		if len(m.Info) == 0 {
			m.Info = nil
		}
		out = append(out, m)
		return true
	})
	return out, next, nil
}

// appendMembers implements memberPager: the page is encoded from the
// stored members, under the read lock.
func (s *MemoryStore) appendMembers(ctx context.Context, dst []byte, tenant, subject, cursor string, limit int) ([]byte, string, error) {
	if limit <= 0 {
		limit = DefaultPageLimit
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return dst, "", ErrClosed
	}
	r := s.rooms[roomKey{tenant, subject}]
	if r == nil {
		return dst, "", nil
	}
	n, last, next := 0, "", ""
	r.order.after(cursor, func(sess string) bool {
		if n == limit {
			next = last
			return false
		}
		dst = appendAnswerMember(dst, r.members[sess])
		last = sess
		n++
		return true
	})
	return dst, next, nil
}

// Count implements Store.
func (s *MemoryStore) Count(ctx context.Context, tenant, subject string) (int, int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, 0, ErrClosed
	}
	r := s.rooms[roomKey{tenant, subject}]
	if r == nil {
		return 0, 0, nil
	}
	return len(r.members), len(r.users), nil
}

// Ping implements Store.
func (s *MemoryStore) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Close implements Store; later calls return ErrClosed.
func (s *MemoryStore) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// sortedStrings is a set of strings in order, as a list of sorted chunks
// of at most chunkMax strings: insert and remove move at most one chunk
// (O(log n + chunkMax)), where one sorted slice would move O(n) strings
// per change in a 100k-member room.
type sortedStrings struct {
	chunks [][]string
}

const chunkMax = 512

// chunk returns the index of the chunk that holds or would hold v.
func (o *sortedStrings) chunk(v string) int {
	i := sort.Search(len(o.chunks), func(i int) bool {
		c := o.chunks[i]
		return c[len(c)-1] >= v
	})
	if i == len(o.chunks) && i > 0 {
		i--
	}
	return i
}

func (o *sortedStrings) insert(v string) {
	if len(o.chunks) == 0 {
		o.chunks = append(o.chunks, []string{v})
		return
	}
	ci := o.chunk(v)
	c := o.chunks[ci]
	j := sort.SearchStrings(c, v)
	if j < len(c) && c[j] == v {
		return
	}
	c = append(c, "")
	copy(c[j+1:], c[j:])
	c[j] = v
	if len(c) > chunkMax {
		half := len(c) / 2
		right := append([]string(nil), c[half:]...)
		c = c[:half:half]
		o.chunks = append(o.chunks, nil)
		copy(o.chunks[ci+2:], o.chunks[ci+1:])
		o.chunks[ci+1] = right
	}
	o.chunks[ci] = c
}

func (o *sortedStrings) remove(v string) {
	if len(o.chunks) == 0 {
		return
	}
	ci := o.chunk(v)
	c := o.chunks[ci]
	j := sort.SearchStrings(c, v)
	if j == len(c) || c[j] != v {
		return
	}
	copy(c[j:], c[j+1:])
	c[len(c)-1] = ""
	c = c[:len(c)-1]
	if len(c) == 0 {
		o.chunks = append(o.chunks[:ci], o.chunks[ci+1:]...)
		return
	}
	o.chunks[ci] = c
}

// after calls f with the strings > cursor in order until f returns false.
func (o *sortedStrings) after(cursor string, f func(string) bool) {
	ci := 0
	if cursor != "" {
		ci = sort.Search(len(o.chunks), func(i int) bool {
			c := o.chunks[i]
			return c[len(c)-1] > cursor
		})
	}
	for ; ci < len(o.chunks); ci++ {
		c := o.chunks[ci]
		j := 0
		if cursor != "" {
			j = sort.Search(len(c), func(i int) bool { return c[i] > cursor })
		}
		for ; j < len(c); j++ {
			if !f(c[j]) {
				return
			}
		}
	}
}
