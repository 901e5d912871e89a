package brain

import (
	"sync"

	"github.com/arqonbus/arqonbus/pb"
)

// opBudget bounds the presence ops decoded and waiting for the workers.
// A node batch takes its ops from it before it is queued and gives them
// back once applied; a batch that does not fit waits (so the NATS
// subscription's own pending limit fills, and NATS drops what is beyond
// it: a gap the node repairs with a snapshot). One batch always fits when
// nothing is queued, whatever its size.
type opBudget struct {
	mu     sync.Mutex
	cond   *sync.Cond
	used   int
	max    int
	closed bool
}

func newOpBudget(max int) *opBudget {
	q := &opBudget{max: max}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// take reserves n ops, waiting while they do not fit. waited reports a
// wait; ok is false once the budget is closed (nothing reserved).
func (q *opBudget) take(n int) (waited, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.closed && q.used > 0 && q.used+n > q.max {
		waited = true
		q.cond.Wait()
	}
	if q.closed {
		return waited, false
	}
	q.used += n
	return waited, true
}

// give returns n ops.
func (q *opBudget) give(n int) {
	q.mu.Lock()
	q.used -= n
	q.mu.Unlock()
	q.cond.Broadcast()
}

// inUse reports the ops reserved.
func (q *opBudget) inUse() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.used
}

// close wakes every waiter; take fails from now on.
func (q *opBudget) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// batchCost is what a batch takes from the budget: its ops, at least 1.
func batchCost(b *pb.PresenceBatch) int { return max(1, len(b.Ops)) }
