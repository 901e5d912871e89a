package router

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// checkIndex verifies the invariants of t's index (node.go): per-depth
// counts, entries findable by their path hash, flags matching the
// children and subscribers, and records within bounds. Assumes no writers.
func checkIndex[T comparable](tb testing.TB, t *trie[T]) {
	tb.Helper()
	ix := t.ix.Load()
	if ix == nil {
		return
	}
	type nodeInfo struct {
		d      int
		parent uint32
		key    uint64
		flags  uint64
	}
	nodes := map[uint32]nodeInfo{}
	total := 0
	for d := range ix.tabs {
		tab := &ix.tabs[d]
		n, tombs := 0, 0
		for g := range tab.ng {
			w := tab.tags[g].Load()
			for j := range uint64(groupSize) {
				switch tg := w >> (8 * j) & 0xff; {
				case tg == tagDeleted:
					tombs++
				case tg&0x80 != 0:
					e := &tab.ents[g*groupSize+j]
					ids := e.ids.Load()
					c := uint32(ids >> 32)
					if c == 0 || int(c) >= len(ix.recs) {
						tb.Fatalf("depth %d: bad node id %d", d+1, c)
					}
					if _, dup := nodes[c]; dup {
						tb.Fatalf("node %d twice", c)
					}
					h := t.w[c].phash
					if tg != tagOf(h) {
						tb.Fatalf("node %d: tag %x, want %x", c, tg, tagOf(h))
					}
					k := e.k.Load()
					if got, _ := ix.find(d, h, uint32(ids), k&keyMask, tokOf(ix, c)); got != c {
						tb.Fatalf("node %d at depth %d not found by its path hash (got %d)", c, d+1, got)
					}
					nodes[c] = nodeInfo{d + 1, uint32(ids), k & keyMask, k &^ keyMask}
					n++
				case tg != 0:
					tb.Fatalf("bad tag %x", tg)
				}
			}
		}
		if n != t.used[d] || tombs != t.tombs[d] {
			tb.Fatalf("depth %d: %d entries, %d tombstones; counted %d, %d", d+1, n, tombs, t.used[d], t.tombs[d])
		}
		total += n
	}
	if total != t.nodes {
		tb.Fatalf("%d entries, t.nodes %d", total, t.nodes)
	}
	// Children per node, as the flags and counters should say.
	kids := map[uint32]int{}
	star := map[uint32]bool{}
	full := map[uint32]uint32{}
	for c, in := range nodes {
		if in.parent != 0 {
			p, ok := nodes[in.parent]
			if !ok || p.d != in.d-1 {
				tb.Fatalf("node %d: parent %d missing or at the wrong depth", c, in.parent)
			}
		} else if in.d != 1 {
			tb.Fatalf("node %d at depth %d has the root as parent", c, in.d)
		}
		switch in.key {
		case starKey:
			star[in.parent] = true
		case fullKey:
			full[in.parent] = c
		default:
			kids[in.parent]++
		}
	}
	flagsOf := func(c uint32) uint64 {
		if c == 0 {
			return t.root.Load()
		}
		return nodes[c].flags
	}
	for c := range nodes {
		for _, id := range []uint32{c, nodes[c].parent} {
			fl := flagsOf(id)
			n := ix.recs[id].n.Load()
			if (fl&fKids != 0) != (kids[id] > 0) || int(t.w[id].kids) != kids[id] {
				tb.Fatalf("node %d: fKids %v, kids %d, counted %d", id, fl&fKids != 0, t.w[id].kids, kids[id])
			}
			if (fl&fStar != 0) != star[id] {
				tb.Fatalf("node %d: fStar %v", id, fl&fStar != 0)
			}
			if (fl&fFull != 0) != (full[id] != 0) || uint32(n>>32&(1<<31-1)) != full[id] {
				tb.Fatalf("node %d: fFull %v, > child %d, want %d", id, fl&fFull != 0, n>>32&(1<<31-1), full[id])
			}
			if id != 0 && (fl&fSubs != 0) != (n&lenMask != 0) {
				tb.Fatalf("node %d: fSubs %v, %d subscribers", id, fl&fSubs != 0, n&lenMask)
			}
			if id != 0 && fl&(fSubs|fKids|fStar|fFull) == 0 {
				tb.Fatalf("node %d is empty but not pruned", id)
			}
		}
	}
}

// tokOf returns node c's long token, or "".
func tokOf[T comparable](ix *index[T], c uint32) string {
	if int(c) < len(ix.toks) {
		if p := ix.toks[c].Load(); p != nil {
			return *p
		}
	}
	return ""
}

// TestIndexChurn grows and shrinks tries through every index operation
// (table growth, tombstones, table shrinking, renumbering, long tokens,
// deep patterns) and checks Match against the reference and the index
// invariants along the way.
func TestIndexChurn(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	toks := []string{"a", "b", "c", "orders", "eu", "created", "exactly8", "a-long-token-here", strings.Repeat("z", 100)}
	pattern := func() string {
		n := 1 + rng.IntN(6)
		p := make([]string, n)
		for i := range p {
			switch x := rng.IntN(20); {
			case x == 0:
				p[i] = "*"
			case x < 4:
				p[i] = fmt.Sprintf("n%d", rng.IntN(300)) // many siblings
			default:
				p[i] = toks[rng.IntN(len(toks))]
			}
		}
		if rng.IntN(10) == 0 {
			p[n-1] = ">"
		}
		if s := strings.Join(p, "."); len(s) <= MaxSubjectLen {
			return s
		}
		return p[0]
	}
	subject := func() string {
		n := 1 + rng.IntN(7)
		p := make([]string, n)
		for i := range p {
			if rng.IntN(4) == 0 {
				p[i] = fmt.Sprintf("n%d", rng.IntN(300))
			} else {
				p[i] = toks[rng.IntN(len(toks))]
			}
		}
		return strings.Join(p, ".")
	}
	r := New[int](Config{CacheSize: 64})
	var ref refRouter
	var live, pinned []refSub
	tenants := []string{"x", "y"}
	for v := 100; v < 100+indexAbove+8; v++ { // a large set: indexed
		s := refSub{"x", "big.set", v}
		if err := r.Insert(s.tenant, s.pattern, s.v); err != nil {
			t.Fatal(err)
		}
		pinned = append(pinned, s)
		ref.insert(s.tenant, s.pattern, s.v)
	}
	check := func(stage string) {
		for _, tn := range tenants {
			if tr := r.tenants.lookup(strhash(tn, hashSeed), tn); tr != nil {
				checkIndex(t, tr)
			}
			for range 200 {
				s := subject()
				if got, want := sorted(r.Match(tn, s)), ref.match(tn, s); !slices.Equal(got, want) {
					t.Fatalf("%s: Match(%s, %q) = %v, want %v", stage, tn, s, got, want)
				}
			}
		}
		if got, want := sorted(r.Match("x", "big.set")), ref.match("x", "big.set"); !slices.Equal(got, want) {
			t.Fatalf("%s: Match(big.set) = %v, want %v", stage, got, want)
		}
		if r.Count() != len(live)+len(pinned) {
			t.Fatalf("%s: Count %d, want %d", stage, r.Count(), len(live)+len(pinned))
		}
	}
	for round := range 3 {
		for range 3000 { // grow
			s := refSub{tenants[rng.IntN(2)], pattern(), rng.IntN(50)}
			err := r.Insert(s.tenant, s.pattern, s.v)
			if slices.Contains(live, s) {
				if err != ErrExists {
					t.Fatalf("Insert(%v) = %v, want ErrExists", s, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("Insert(%v): %v", s, err)
			}
			live = append(live, s)
			ref.insert(s.tenant, s.pattern, s.v)
		}
		check(fmt.Sprintf("round %d grown", round))
		for len(live) > 50 { // shrink, interleaved with inserts
			if rng.IntN(5) == 0 {
				s := refSub{tenants[rng.IntN(2)], pattern(), rng.IntN(50)}
				if r.Insert(s.tenant, s.pattern, s.v) == nil {
					live = append(live, s)
					ref.insert(s.tenant, s.pattern, s.v)
				}
				continue
			}
			i := rng.IntN(len(live))
			s := live[i]
			if err := r.Remove(s.tenant, s.pattern, s.v); err != nil {
				t.Fatalf("Remove(%v): %v", s, err)
			}
			if err := r.Remove(s.tenant, s.pattern, s.v); err != ErrNotFound {
				t.Fatalf("second Remove(%v) = %v", s, err)
			}
			live = slices.Delete(live, i, i+1)
			ref.remove(s.tenant, s.pattern, s.v)
			if len(live)%500 == 0 {
				check(fmt.Sprintf("round %d at %d", round, len(live)))
			}
		}
		check(fmt.Sprintf("round %d shrunk", round))
	}
	for _, s := range append(live, pinned...) {
		if err := r.Remove(s.tenant, s.pattern, s.v); err != nil {
			t.Fatalf("Remove(%v): %v", s, err)
		}
	}
	if r.Count() != 0 || r.NodeCount() != 0 {
		t.Fatalf("Count %d NodeCount %d after removing all", r.Count(), r.NodeCount())
	}
}
