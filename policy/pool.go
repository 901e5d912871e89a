package policy

import (
	"context"
	"errors"
)

// errRetired is returned by module.get when the module has been swapped out:
// the caller retries with the current snapshot.
var errRetired = errors.New("policy: module retired")

// The pool of a module: idle holds instances ready for use; slots holds one
// token per live instance, so at most PoolSize exist. An instance is taken
// by one goroutine (get), then given back (put) or, after any failure,
// discarded (discard), which frees its slot for a fresh instance.
//
// A retired module (replaced or removed by a reload, or the engine closed)
// creates no new instances; idle ones are closed at once and busy ones when
// they come back. Its compiled code is closed with its last instance.

// get returns an instance for the caller's exclusive use, creating one if the
// pool is below PoolSize, or waiting for one to come back.
func (m *module) get(ctx context.Context) (*instance, error) {
	select {
	case in := <-m.idle:
		return in, nil
	default:
	}
	select {
	case in := <-m.idle:
		return in, nil
	case m.slots <- struct{}{}:
		return m.newInstance()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put gives back a healthy instance.
func (m *module) put(in *instance) {
	if m.retired.Load() {
		m.discard(in)
		return
	}
	m.idle <- in // never blocks: at most PoolSize instances exist
	if m.retired.Load() {
		m.drainIdle() // retire may have drained before the send
	}
}

// discard closes an instance and frees its slot.
func (m *module) discard(in *instance) {
	in.close()
	m.instanceGone()
}

// instanceGone accounts for a closed instance (or a failed creation).
func (m *module) instanceGone() {
	m.mu.Lock()
	m.live--
	m.maybeReleaseLocked()
	m.mu.Unlock()
	<-m.slots
}

// drainIdle closes the idle instances.
func (m *module) drainIdle() {
	for {
		select {
		case in := <-m.idle:
			m.discard(in)
		default:
			return
		}
	}
}

// retire stops the module from creating instances and closes it once the
// busy ones come back.
func (m *module) retire() {
	if m.broken != reasonNone {
		return
	}
	m.mu.Lock()
	m.retired.Store(true)
	m.maybeReleaseLocked()
	m.mu.Unlock()
	m.drainIdle()
}

// maybeReleaseLocked closes the compiled module of a retired module without
// live instances. Assumes m.mu is held.
func (m *module) maybeReleaseLocked() {
	if m.retired.Load() && m.live == 0 && !m.released {
		m.released = true
		if m.compiled != nil {
			_ = m.compiled.Close(context.Background())
		}
		close(m.drained)
	}
}
