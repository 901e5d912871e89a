package router

import (
	"fmt"
	"runtime"
	"testing"
)

// mallocs returns how many heap allocations runs calls of f make in total.
// Unlike testing.AllocsPerRun, whose result is rounded down to a whole
// number per run, it sees a single allocation among thousands of runs.
func mallocs(runs int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f() // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

// TestMatchAllocs asserts that Match allocates nothing on a cache hit and on
// a steady-state miss: subjects that match no node, one node, or several
// nodes (a combined result), cycled through a set larger than the cache.
func TestMatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	type conn struct{ id int }
	for _, cacheSize := range []int{16, -1} {
		r := New[*conn](Config{CacheSize: cacheSize})
		var subjects []string
		for i := range 64 {
			c := &conn{i}
			for _, p := range []string{
				fmt.Sprintf("orders.eu.%d.created", i), // one node
				fmt.Sprintf("users.%d.*.x", i),         // with the next: two nodes
				fmt.Sprintf("users.%d.>", i),
			} {
				if err := r.Insert("acme", p, c); err != nil {
					t.Fatal(err)
				}
			}
			subjects = append(subjects,
				fmt.Sprintf("orders.eu.%d.created", i),
				fmt.Sprintf("users.%d.y.x", i),
				fmt.Sprintf("nobody.%d.here.x", i))
		}
		if err := r.Insert("acme", "orders.*.*.created", &conn{-1}); err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, "orders.us.1.created") // matched by the wildcard only
		for _, s := range subjects {                       // warm up: combos get built
			r.Match("acme", s)
		}
		if got := r.Match("acme", "users.3.y.x"); len(got) != 2 {
			t.Fatalf("combined result has %d values, want 2", len(got))
		}
		if got := r.Match("acme", "orders.eu.3.created"); len(got) != 2 {
			t.Fatalf("combined result has %d values, want 2", len(got))
		}
		hit := testing.AllocsPerRun(1000, func() {
			r.Match("acme", "orders.eu.7.created")
		})
		if hit != 0 {
			t.Errorf("cache %d: %v allocs per cache hit", cacheSize, hit)
		}
		i := 0
		miss := testing.AllocsPerRun(1000, func() {
			r.Match("acme", subjects[i%len(subjects)]) // 193 subjects > 16 slots
			i++
		})
		if miss != 0 {
			t.Errorf("cache %d: %v allocs per steady-state miss", cacheSize, miss)
		}
		if n := mallocs(10*len(subjects), func() {
			r.Match("acme", subjects[i%len(subjects)])
			i++
		}); n != 0 {
			t.Errorf("cache %d: %d allocations in %d steady-state Matches", cacheSize, n, 10*len(subjects))
		}
		none := testing.AllocsPerRun(100, func() { r.Match("nobody", "orders.eu.7.created") })
		if none != 0 {
			t.Errorf("cache %d: %v allocs per Match in an unknown tenant", cacheSize, none)
		}
	}
}

// TestValidateAllocs asserts that validation allocates nothing.
func TestValidateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	n := testing.AllocsPerRun(100, func() {
		_ = ValidateSubject("orders.eu.123.created")
		_ = ValidatePattern("orders.*.123.>")
		_ = ValidateSubject("a..b")
	})
	if n != 0 {
		t.Errorf("%v allocs per validation", n)
	}
}
