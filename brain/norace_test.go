//go:build !race

package brain

import "testing"

// Allocation counts hold without the race detector only.

// TestAppendMembersAllocs: a page of 1000 from the memory store is
// encoded without allocating (into a buffer big enough).
func TestAppendMembersAllocs(t *testing.T) {
	s := NewMemoryStore()
	defer s.Close()
	for i := 0; i < 2000; i += 500 {
		b := benchBatch("n1", uint64(i/500+1), i, 500, 1, false)
		if _, err := s.Apply(bg, b); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 0, 1<<20)
	allocs := testing.AllocsPerRun(20, func() {
		out, next, err := s.appendMembers(bg, buf[:0], "acme", "room.0", session(499), 1000)
		if err != nil || next != session(1499) || len(out) == 0 {
			t.Fatal(next, err)
		}
	})
	if allocs > 2 {
		t.Fatalf("%v allocations per page", allocs)
	}
}
