package router

import (
	"fmt"
	"math/bits"
	"strings"
	"testing"
)

// Shape probing: a reference design for the cache-miss benchmark
//
// The router walks a trie: per subject token it looks up the literal child
// and, where one exists, the "*" child, so a 4-token miss makes about seven
// dependent table lookups (perf-reports/router.md). The usual alternative is
// to probe by pattern shape: group a tenant's patterns by shape (length,
// which tokens are "*", whether it ends in ">"), and match a subject by
// hashing it once per shape the tenant has (the tokens a shape wildcards
// replaced by "*") and probing one hash table of whole patterns. The probes
// do not depend on each other, so the CPU can overlap their cache misses.
//
// shapeProbe is that design at its most favourable: static (no concurrent
// writers, no sequence lock), no result cache to fill, the tenant found
// before the clock starts, per-tenant tables of 16-byte entries a quarter to
// half full, the subject's prefix hashes shared by every shape. It is
// test code, kept so that BenchmarkShapeProbeMiss shows, beside
// BenchmarkMatchMiss in the same run, what this machine allows a miss to
// cost: if even this does not beat the trie walk, the miss time is the
// memory's, not the algorithm's.
type shapeProbe struct {
	tenants map[string]*shapeTenant
	pats    []string       // by pattern id
	vals    [][]*benchConn // by pattern id
}

// A patShape is which tokens of a pattern are "*" (star, by bit), how many
// tokens it has before a trailing ">" or in all (n), and whether it ends in
// ">" (full).
type patShape struct {
	star uint32
	n    int
	full bool
}

// A shapeTenant holds one tenant's shapes, by the subject length they can
// match, and its patterns (hash -> id, linear probing).
type shapeTenant struct {
	seed   uint64
	shapes [MaxTokens + 1][]patShape
	tab    []shapeEnt
	mask   uint64
	n      int
}

type shapeEnt struct {
	h  uint64 // pattern hash | 1; 0 for an empty slot
	id uint64
}

// patternHash hashes the keys of a pattern's tokens ("*" as starKey) and a
// trailing ">".
func patternHash(seed uint64, keys []uint64, full bool) uint64 {
	h := seed
	for _, k := range keys {
		h = mix(h^k, wyp1)
	}
	if full {
		h = mix(h^fullKey, wyp1)
	}
	return h | 1
}

func newShapeProbe(subs []tsub) *shapeProbe {
	p := &shapeProbe{tenants: map[string]*shapeTenant{}}
	ids := map[[2]string]int{}
	for _, s := range subs {
		t := p.tenants[s.tenant]
		if t == nil {
			t = &shapeTenant{seed: strhash(s.tenant, hashSeed)}
			p.tenants[s.tenant] = t
		}
		var sh patShape
		var keys []uint64
		for i, tok := range strings.Split(s.pattern, ".") {
			switch tok {
			case "*":
				sh.star |= 1 << i
				keys = append(keys, starKey)
			case ">":
				sh.full = true
			default:
				keys = append(keys, tokenKey(tok, 0, len(tok)))
			}
		}
		sh.n = len(keys)
		for l := sh.n; l <= MaxTokens; l++ {
			if (l == sh.n) != sh.full && !hasShape(t.shapes[l], sh) {
				t.shapes[l] = append(t.shapes[l], sh)
			}
		}
		k := [2]string{s.tenant, s.pattern}
		id, ok := ids[k]
		if !ok {
			id = len(p.pats)
			ids[k] = id
			p.pats = append(p.pats, s.pattern)
			p.vals = append(p.vals, nil)
			t.add(shapeEnt{patternHash(t.seed, keys, sh.full), uint64(id)})
		}
		p.vals[id] = append(p.vals[id], s.c)
	}
	return p
}

func hasShape(list []patShape, sh patShape) bool {
	for _, x := range list {
		if x == sh {
			return true
		}
	}
	return false
}

// add inserts e, growing the table to keep it at most half full.
func (t *shapeTenant) add(e shapeEnt) {
	t.n++
	if 2*t.n > len(t.tab) {
		old := t.tab
		size := 16
		for size < 4*t.n {
			size <<= 1
		}
		t.tab, t.mask = make([]shapeEnt, size), uint64(size-1)
		for _, o := range old {
			if o.h != 0 {
				t.put(o)
			}
		}
	}
	t.put(e)
}

func (t *shapeTenant) put(e shapeEnt) {
	for j := e.h & t.mask; ; j = (j + 1) & t.mask {
		if t.tab[j].h == 0 {
			t.tab[j] = e
			return
		}
	}
}

// match returns how many values of t's patterns match subject.
func (p *shapeProbe) match(t *shapeTenant, subject string) int {
	var m matcher[*benchConn]
	if !m.split(subject) {
		return 0
	}
	var prefix [MaxTokens + 1]uint64 // hashes of the literal prefixes
	prefix[0] = t.seed
	for i := range m.ntok {
		prefix[i+1] = mix(prefix[i]^m.keys[i], wyp1)
	}
	n := 0
	for _, sh := range t.shapes[m.ntok] {
		var h uint64
		if sh.star == 0 {
			h = prefix[sh.n]
		} else {
			first := bits.TrailingZeros32(sh.star)
			h = prefix[first]
			for i := first; i < sh.n; i++ {
				k := m.keys[i]
				if sh.star>>i&1 != 0 {
					k = starKey
				}
				h = mix(h^k, wyp1)
			}
		}
		if sh.full {
			h = mix(h^fullKey, wyp1)
		}
		h |= 1
		for j := h & t.mask; ; j = (j + 1) & t.mask {
			e := &t.tab[j]
			if e.h == 0 {
				break
			}
			if e.h == h && patternMatches(p.pats[e.id], subject) {
				n += len(p.vals[e.id])
			}
		}
	}
	return n
}

// patternMatches is refMatch without allocating: the exact check of a
// pattern whose hash matched.
func patternMatches(pat, subj string) bool {
	for {
		pt, prest, pmore := strings.Cut(pat, ".")
		if pt == ">" {
			return subj != ""
		}
		st, srest, smore := strings.Cut(subj, ".")
		if pt != "*" && pt != st {
			return false
		}
		if !pmore || !smore {
			return !pmore && !smore
		}
		pat, subj = prest, srest
	}
}

// TestShapeProbeAgrees keeps the reference design honest: on the benchmark
// fixture it finds as many values as Match for every cold subject.
func TestShapeProbeAgrees(t *testing.T) {
	f := getFixture(1000)
	f.build()
	p := newShapeProbe(f.subs)
	matched := 0
	for _, s := range f.cold {
		want := len(f.r.Match(s.tenant, s.subject))
		got := 0
		if tt := p.tenants[s.tenant]; tt != nil {
			got = p.match(tt, s.subject)
		}
		if got != want {
			t.Fatalf("%s %s: shape probe %d values, Match %d", s.tenant, s.subject, got, want)
		}
		matched += got
	}
	if matched == 0 {
		t.Fatal("no cold subject matched anything: the comparison proves nothing")
	}
}

// BenchmarkShapeProbeMiss is BenchmarkMatchMiss's workload on shapeProbe,
// with the tenant lookup done before the clock starts.
func BenchmarkShapeProbeMiss(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			f := getFixture(n)
			p := newShapeProbe(f.subs)
			empty := &shapeTenant{tab: make([]shapeEnt, 1)}
			ts := make([]*shapeTenant, len(f.cold))
			shapes := 0
			for i, s := range f.cold {
				if ts[i] = p.tenants[s.tenant]; ts[i] == nil {
					ts[i] = empty
				}
				shapes += len(ts[i].shapes[4])
			}
			b.ReportAllocs()
			mask := len(f.cold) - 1
			i := 0
			for b.Loop() {
				sinkN += p.match(ts[i&mask], f.cold[i&mask].subject)
				i++
			}
			b.ReportMetric(float64(shapes)/float64(len(f.cold)), "probes/match")
		})
	}
}

// BenchmarkDependentRead measures this machine's memory latency as the
// miss benchmarks meet it: one 8-byte read per op, each at an address the
// previous read returned (a random cycle through one word per 64-byte
// line), over working sets from 1 to 64 MiB. The router at 100k
// subscriptions holds about 16 MiB.
func BenchmarkDependentRead(b *testing.B) {
	for _, mib := range []int{1, 4, 8, 16, 64} {
		b.Run(fmt.Sprintf("MiB=%d", mib), func(b *testing.B) {
			lines := mib << 20 / 64
			next := make([]uint64, lines*8)
			perm := newGen(uint64(mib)).rng.Perm(lines)
			for i, l := range perm {
				next[l*8] = uint64(perm[(i+1)%lines] * 8)
			}
			p := uint64(0)
			for b.Loop() {
				p = next[p]
			}
			sinkN += int(p)
		})
	}
}
