package brain

import (
	"testing"
	"time"
)

// The budget admits batches while they fit, always one when empty, makes
// the rest wait until ops are given back, and releases waiters on close.
func TestOpBudget(t *testing.T) {
	q := newOpBudget(10)
	if waited, ok := q.take(25); waited || !ok { // bigger than the budget, but nothing queued
		t.Fatalf("an oversized batch on an empty budget: waited %v ok %v", waited, ok)
	}
	got := make(chan bool, 1)
	go func() {
		waited, ok := q.take(3)
		got <- waited && ok
	}()
	select {
	case <-got:
		t.Fatal("a batch was admitted past the budget")
	case <-time.After(50 * time.Millisecond):
	}
	q.give(25)
	if !<-got {
		t.Fatal("the waiting batch was not admitted after the give, or did not report its wait")
	}
	if n := q.inUse(); n != 3 {
		t.Fatalf("in use %d, want 3", n)
	}
	if _, ok := q.take(7); !ok { // fits exactly
		t.Fatal("a batch that fits was refused")
	}
	go func() {
		_, ok := q.take(1)
		got <- ok
	}()
	time.Sleep(20 * time.Millisecond)
	q.close()
	if <-got {
		t.Fatal("a waiter was admitted by close")
	}
	if _, ok := q.take(1); ok {
		t.Fatal("take succeeded after close")
	}
}
