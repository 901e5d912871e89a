package client

import (
	"testing"
	"time"
)

// backoff stays within [0, min(max, wait·2ⁿ)] and spreads over it.
func TestBackoffBounds(t *testing.T) {
	cases := []struct{ wait, max time.Duration }{
		{250 * time.Millisecond, 30 * time.Second},
		{time.Millisecond, 10 * time.Millisecond},
		{time.Second, time.Second},
		{time.Duration(1) << 62, time.Duration(1<<63 - 1)}, // no overflow
	}
	for _, c := range cases {
		for n := 0; n < 80; n++ {
			bound := c.wait
			for i := 0; i < n && bound < c.max; i++ {
				if bound > c.max/2 {
					bound = c.max
					break
				}
				bound *= 2
			}
			bound = min(bound, c.max)
			low, high := 0, 0
			for i := 0; i < 200; i++ {
				d := backoff(n, c.wait, c.max)
				if d < 0 || d > bound || d > c.max {
					t.Fatalf("backoff(%d, %v, %v) = %v, bound %v", n, c.wait, c.max, d, bound)
				}
				if d < bound/4 {
					low++
				}
				if d > bound*3/4 {
					high++
				}
			}
			if low == 0 || high == 0 { // 200 draws: (3/4)^200 is never
				t.Fatalf("backoff(%d, %v, %v) not spread over [0, %v]: %d low, %d high", n, c.wait, c.max, bound, low, high)
			}
		}
	}
	if d := backoff(5, 0, 0); d != 0 {
		t.Fatalf("zero wait: %v", d)
	}
}

func TestServerList(t *testing.T) {
	o := Options{URL: "a", URLs: []string{"b", "a", "c", ""}, NoRandomize: true}
	if got := serverList(o); len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("list %v", got)
	}
	if got := serverList(Options{}); len(got) != 1 || got[0] != "ws://127.0.0.1:8080/v1/socket" {
		t.Fatalf("default %v", got)
	}
	o.NoRandomize = false
	firsts := map[string]bool{}
	for i := 0; i < 200; i++ {
		l := serverList(o)
		if len(l) != 3 {
			t.Fatalf("shuffled %v", l)
		}
		firsts[l[0]] = true
	}
	if len(firsts) != 3 {
		t.Fatalf("shuffling never put %v first", firsts)
	}
}
