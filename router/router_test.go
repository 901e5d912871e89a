package router

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestValidate(t *testing.T) {
	long := strings.Repeat("a", MaxSubjectLen+1)
	max := strings.Repeat("a", MaxSubjectLen)
	tooMany := strings.Repeat("a.", MaxTokens) + "a"
	maxTok := strings.Repeat("a.", MaxTokens-1) + "a"
	cases := []struct {
		in             string
		subject, patrn error
	}{
		{"", ErrEmptySubject, ErrEmptySubject},
		{long, ErrSubjectTooLong, ErrSubjectTooLong},
		{max, nil, nil},
		{tooMany, ErrTooManyTokens, ErrTooManyTokens},
		{maxTok, nil, nil},
		{"a..b", ErrEmptyToken, ErrEmptyToken},
		{".a", ErrEmptyToken, ErrEmptyToken},
		{"a.", ErrEmptyToken, ErrEmptyToken},
		{".", ErrEmptyToken, ErrEmptyToken},
		{"a b", ErrInvalidChar, ErrInvalidChar},
		{"a\tb", ErrInvalidChar, ErrInvalidChar},
		{"a\x00", ErrInvalidChar, ErrInvalidChar},
		{"a\x7f", ErrInvalidChar, ErrInvalidChar},
		{"a\xff", ErrInvalidChar, ErrInvalidChar},
		{"a.\xc3", ErrInvalidChar, ErrInvalidChar},
		{"caf\u00e9.\u65e5\u672c", nil, nil},
		{"\ufffd", nil, nil}, // the replacement character itself is valid UTF-8
		{"*", ErrWildcardInPublish, nil},
		{">", ErrWildcardInPublish, nil},
		{"a.*.c", ErrWildcardInPublish, nil},
		{"a.>", ErrWildcardInPublish, nil},
		{"*.*.>", ErrWildcardInPublish, nil},
		{"a*", ErrBadWildcard, ErrBadWildcard},
		{"b>c", ErrBadWildcard, ErrBadWildcard},
		{"a.**", ErrBadWildcard, ErrBadWildcard},
		{"a.>.b", ErrWildcardInPublish, ErrBadWildcard},
		{">.>", ErrWildcardInPublish, ErrBadWildcard},
		{"a.b*.>", ErrBadWildcard, ErrBadWildcard},
		// Precedence: invalid char beats empty token beats too many tokens
		// beats wildcard faults.
		{"a*..b c", ErrInvalidChar, ErrInvalidChar},
		{"a*..b", ErrEmptyToken, ErrEmptyToken},
		{"*." + tooMany, ErrTooManyTokens, ErrTooManyTokens},
		{"orders.eu.created", nil, nil},
		{"a-b_c:d/e@f", nil, nil},
	}
	for _, c := range cases {
		if got := ValidateSubject(c.in); got != c.subject {
			t.Errorf("ValidateSubject(%q) = %v, want %v", c.in, got, c.subject)
		}
		if got := ValidatePattern(c.in); got != c.patrn {
			t.Errorf("ValidatePattern(%q) = %v, want %v", c.in, got, c.patrn)
		}
		if got := refValidate(c.in, false); got != c.subject {
			t.Errorf("refValidate(%q, false) = %v, want %v", c.in, got, c.subject)
		}
		if got := refValidate(c.in, true); got != c.patrn {
			t.Errorf("refValidate(%q, true) = %v, want %v", c.in, got, c.patrn)
		}
	}
}

func TestErrorsPrefixed(t *testing.T) {
	for _, err := range []error{ErrEmptySubject, ErrSubjectTooLong, ErrTooManyTokens, ErrEmptyToken,
		ErrInvalidChar, ErrWildcardInPublish, ErrBadWildcard, ErrEmptyTenant, ErrNotFound, ErrExists} {
		if !strings.HasPrefix(err.Error(), "router: ") {
			t.Errorf("%q lacks the router: prefix", err)
		}
	}
}

func TestMatchSemantics(t *testing.T) {
	cases := []struct {
		pattern string
		yes, no []string
	}{
		{"a", []string{"a"}, []string{"b", "a.b", "aa"}},
		{"a.b.c", []string{"a.b.c"}, []string{"a.b", "a.b.c.d", "a.b.d", "x.b.c"}},
		{"*", []string{"a", "b"}, []string{"a.b"}},
		{"a.*", []string{"a.b", "a.c"}, []string{"a", "a.b.c", "b.c"}},
		{"*.b", []string{"a.b", "x.b"}, []string{"b", "a.c", "a.b.c"}},
		{"a.*.c", []string{"a.b.c", "a.x.c"}, []string{"a.c", "a.b.d", "a.b.c.d"}},
		{"*.*", []string{"a.b"}, []string{"a", "a.b.c"}},
		{">", []string{"a", "a.b", "a.b.c.d"}, nil},
		{"a.>", []string{"a.b", "a.b.c"}, []string{"a", "b.c"}},
		{"a.*.>", []string{"a.b.c", "a.b.c.d"}, []string{"a.b", "a"}},
		{"*.>", []string{"a.b", "x.y.z"}, []string{"a"}},
		{"a.b.>", []string{"a.b.c"}, []string{"a.b", "a.c.d"}},
	}
	for _, c := range cases {
		for _, cacheSize := range []int{0, -1} {
			r := New[int](Config{CacheSize: cacheSize})
			if err := r.Insert("t", c.pattern, 1); err != nil {
				t.Fatal(err)
			}
			for _, s := range c.yes {
				for range 3 { // miss, miss (admitted), hit
					if got := r.Match("t", s); !slices.Equal(got, []int{1}) {
						t.Errorf("%q vs %q = %v, want match", c.pattern, s, got)
					}
					if !refMatch(c.pattern, s) {
						t.Errorf("refMatch(%q, %q) = false", c.pattern, s)
					}
				}
				if got := r.Match("other", s); got != nil {
					t.Errorf("tenant leak: %q vs %q in other tenant = %v", c.pattern, s, got)
				}
			}
			for _, s := range c.no {
				for range 3 {
					if got := r.Match("t", s); got != nil {
						t.Errorf("%q vs %q = %v, want no match", c.pattern, s, got)
					}
				}
				if refMatch(c.pattern, s) {
					t.Errorf("refMatch(%q, %q) = true", c.pattern, s)
				}
			}
		}
	}
}

func TestInsertRemoveErrors(t *testing.T) {
	r := New[int](Config{})
	if err := r.Insert("", "a", 1); err != ErrEmptyTenant {
		t.Errorf("Insert empty tenant: %v", err)
	}
	if err := r.Remove("", "a", 1); err != ErrEmptyTenant {
		t.Errorf("Remove empty tenant: %v", err)
	}
	if err := r.Insert("t", "a.>.b", 1); err != ErrBadWildcard {
		t.Errorf("Insert bad pattern: %v", err)
	}
	if err := r.Remove("t", "a..b", 1); err != ErrEmptyToken {
		t.Errorf("Remove bad pattern: %v", err)
	}
	if err := r.Remove("t", "a", 1); err != ErrNotFound {
		t.Errorf("Remove from missing tenant: %v", err)
	}
	if err := r.Insert("t", "a.b", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Insert("t", "a.b", 1); err != ErrExists {
		t.Errorf("duplicate Insert: %v", err)
	}
	for _, p := range []string{"a", "a.b.c", "a.*", "a.>", "b.b"} {
		if err := r.Remove("t", p, 1); err != ErrNotFound {
			t.Errorf("Remove(%q): %v", p, err)
		}
	}
	if err := r.Remove("t", "a.b", 2); err != ErrNotFound {
		t.Errorf("Remove of other value: %v", err)
	}
	if err := r.Remove("u", "a.b", 1); err != ErrNotFound {
		t.Errorf("Remove in other tenant: %v", err)
	}
	if r.Count() != 1 {
		t.Errorf("Count = %d", r.Count())
	}
	if err := r.Remove("t", "a.b", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove("t", "a.b", 1); err != ErrNotFound {
		t.Errorf("second Remove: %v", err)
	}
	if r.Count() != 0 || r.NodeCount() != 0 {
		t.Errorf("Count %d NodeCount %d, want 0 0", r.Count(), r.NodeCount())
	}
	if r.Match("", "a") != nil {
		t.Error("Match with empty tenant")
	}
}

// TestMatchInvalidSubject: Match never panics and matches nothing through
// empty tokens or too many tokens.
func TestMatchInvalidSubject(t *testing.T) {
	r := New[int](Config{})
	for i, p := range []string{">", "*", "a.>", "*.*", "a.*"} {
		if err := r.Insert("t", p, i); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"", ".", "a.", ".a", "a..b", strings.Repeat("a.", MaxTokens) + "a",
		strings.Repeat("x", 1000), "a b", "\xff", "*", ">", "a.*"} {
		got := r.Match("t", s)
		if err := ValidateSubject(s); err == ErrEmptySubject || err == ErrEmptyToken || err == ErrTooManyTokens {
			if got != nil {
				t.Errorf("Match(%q) = %v, want nil", s, got)
			}
		}
	}
	// Wildcard tokens in a subject are matched as bytes: only by wildcards.
	if got := sorted(r.Match("t", "a.*")); !slices.Equal(got, []int{0, 2, 3, 4}) {
		t.Errorf("Match(a.*) = %v", got)
	}
}

// TestManyValuesOnePattern exercises the position index and copy-on-write.
func TestManyValuesOnePattern(t *testing.T) {
	r := New[int](Config{})
	const n = 1000
	for i := range n {
		if err := r.Insert("t", "room.1", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Insert("t", "room.1", 500); err != ErrExists {
		t.Fatalf("duplicate in large set: %v", err)
	}
	snap := r.Match("t", "room.1")
	keep := slices.Clone(snap)
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[int]bool{}
	for i := range n {
		live[i] = true
	}
	for _, i := range rng.Perm(n)[:n-10] {
		if err := r.Remove("t", "room.1", i); err != nil {
			t.Fatal(err)
		}
		delete(live, i)
		if i%97 == 0 {
			got := sorted(r.Match("t", "room.1"))
			if len(got) != len(live) {
				t.Fatalf("after remove: %d values, want %d", len(got), len(live))
			}
			for _, v := range got {
				if !live[v] {
					t.Fatalf("removed value %d still matched", v)
				}
			}
		}
	}
	if !slices.Equal(snap, keep) {
		t.Fatal("a Match result changed after removes")
	}
	if got := len(r.Match("t", "room.1")); got != 10 {
		t.Fatalf("%d left, want 10", got)
	}
}

// TestAgainstReference inserts and removes random subscriptions and compares
// every Match with the reference, with and without the result cache.
func TestAgainstReference(t *testing.T) {
	for _, cacheSize := range []int{0, 4, -1} {
		rng := rand.New(rand.NewPCG(7, uint64(cacheSize+10)))
		r := New[int](Config{CacheSize: cacheSize})
		var ref refRouter
		// Short and long tokens (long ones are stored with their node), an
		// 8-byte token and longer ones sharing its prefix, and enough
		// distinct tokens for hashed levels that grow and shrink.
		toks := []string{"a", "b", "c", "d", "e", "f", "g", "h", "abcdefg", "abcdefgh", "abcdefghi",
			"abcdefghijklmnop", "abcdefghijklmnopq", strings.Repeat("long-", 12)}
		for i := range 40 {
			toks = append(toks, fmt.Sprintf("n%d", i))
		}
		tok := func() string {
			if rng.IntN(2) == 0 {
				return toks[rng.IntN(8)]
			}
			return toks[rng.IntN(len(toks))]
		}
		pattern := func() string {
			n := 1 + rng.IntN(4)
			var p []string
			for i := range n {
				switch x := rng.IntN(10); {
				case x == 0:
					p = append(p, "*")
				case x == 1 && i == n-1:
					p = append(p, ">")
				default:
					p = append(p, tok())
				}
			}
			return strings.Join(p, ".")
		}
		subject := func() string {
			n := 1 + rng.IntN(5)
			p := make([]string, n)
			for i := range p {
				p[i] = tok()
			}
			return strings.Join(p, ".")
		}
		tenants := []string{"x", "y", "z"}
		var subs []refSub
		for step := range 4000 {
			tn := tenants[rng.IntN(len(tenants))]
			if rng.IntN(3) > 0 || len(subs) == 0 {
				s := refSub{tn, pattern(), rng.IntN(20)}
				err := r.Insert(s.tenant, s.pattern, s.v)
				if slices.Contains(subs, s) {
					if err != ErrExists {
						t.Fatalf("duplicate insert: %v", err)
					}
				} else {
					if err != nil {
						t.Fatal(err)
					}
					subs = append(subs, s)
					ref.insert(s.tenant, s.pattern, s.v)
				}
			} else {
				i := rng.IntN(len(subs))
				s := subs[i]
				if err := r.Remove(s.tenant, s.pattern, s.v); err != nil {
					t.Fatalf("remove %v: %v", s, err)
				}
				subs = slices.Delete(subs, i, i+1)
				ref.remove(s.tenant, s.pattern, s.v)
			}
			for range 4 {
				subj := subject()
				if got, want := sorted(r.Match(tn, subj)), ref.match(tn, subj); !slices.Equal(got, want) {
					t.Fatalf("step %d cache %d: Match(%s, %s) = %v, want %v", step, cacheSize, tn, subj, got, want)
				}
			}
			if r.Count() != len(subs) {
				t.Fatalf("Count %d, want %d", r.Count(), len(subs))
			}
		}
		for _, s := range subs {
			if err := r.Remove(s.tenant, s.pattern, s.v); err != nil {
				t.Fatal(err)
			}
		}
		if r.Count() != 0 || r.NodeCount() != 0 {
			t.Fatalf("Count %d NodeCount %d after removing all", r.Count(), r.NodeCount())
		}
	}
}

// TestManyMatchingNodes matches a subject against more nodes than a matcher
// holds inline.
func TestManyMatchingNodes(t *testing.T) {
	r := New[int](Config{})
	var ref refRouter
	const subj = "a.b.c.d.e"
	toks := strings.Split(subj, ".")
	v := 0
	for mask := range 1 << len(toks) { // every literal/"*" mix: 32 patterns
		p := slices.Clone(toks)
		for i := range p {
			if mask&(1<<i) != 0 {
				p[i] = "*"
			}
		}
		for end := 1; end <= len(p); end++ { // and their ">" prefixes
			pat := strings.Join(p[:end], ".")
			if end < len(p) {
				pat += ".>"
			}
			if r.Insert("t", pat, v) == nil {
				ref.insert("t", pat, v)
			}
			v++
		}
	}
	for range 2 {
		got, want := sorted(r.Match("t", subj)), ref.match("t", subj)
		if len(want) <= inlineNodes || !slices.Equal(got, want) {
			t.Fatalf("Match = %d values, want %d (> %d)", len(got), len(want), inlineNodes)
		}
	}
}

// TestDuplicateAcrossPatterns: a value under two matching patterns appears twice.
func TestDuplicateAcrossPatterns(t *testing.T) {
	r := New[string](Config{})
	for _, p := range []string{"a.b", "a.*", "a.>", "*.b"} {
		if err := r.Insert("t", p, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Insert("t", "a.b", "w"); err != nil {
		t.Fatal(err)
	}
	r.Match("t", "a.b") // fill the cache: the second Match below is a hit
	for range 2 {
		got := slices.Clone(r.Match("t", "a.b"))
		slices.Sort(got)
		if want := []string{"v", "v", "v", "v", "w"}; !slices.Equal(got, want) {
			t.Fatalf("Match = %v, want %v", got, want)
		}
	}
}

// TestChurn runs inserts, removes and matches from several goroutines. Each
// writer owns its values, so it can check that its own Insert is visible to
// the next Match and its Remove too, through the caches. Matchers keep some
// results and check at the end that none changed.
func TestChurn(t *testing.T) {
	const (
		writers  = 4
		matchers = 3
		rounds   = 3000
	)
	r := New[int](Config{CacheSize: 64})
	tenants := []string{"t0", "t1", "t2"}
	patterns := []struct{ p, subj string }{
		{"a.b.c", "a.b.c"}, {"a.*.c", "a.x.c"}, {"a.>", "a.q.r"}, {"*.b.c", "z.b.c"},
		{"chat.room.1", "chat.room.1"}, {"chat.*", "chat.lobby"}, {">", "any.thing"},
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers+matchers)
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			type sub struct {
				tn, p string
				v     int
			}
			var left []sub
			defer func() {
				// Remove the leftovers while the others still run.
				for _, s := range left {
					if err := r.Remove(s.tn, s.p, s.v); err != nil {
						errc <- err
						return
					}
				}
			}()
			for i := range rounds {
				v := w*1_000_000 + i
				tn := tenants[rng.IntN(len(tenants))]
				pt := patterns[rng.IntN(len(patterns))]
				if err := r.Insert(tn, pt.p, v); err != nil {
					errc <- err
					return
				}
				if !slices.Contains(r.Match(tn, pt.subj), v) {
					errc <- fmt.Errorf("value %d missing after Insert(%s, %s)", v, tn, pt.p)
					return
				}
				if rng.IntN(4) == 0 {
					left = append(left, sub{tn, pt.p, v}) // leave it in for a while
					continue
				}
				if err := r.Remove(tn, pt.p, v); err != nil {
					errc <- err
					return
				}
				if slices.Contains(r.Match(tn, pt.subj), v) {
					errc <- fmt.Errorf("value %d present after Remove(%s, %s)", v, tn, pt.p)
					return
				}
			}
		}()
	}
	type kept struct{ got, want []int }
	keeps := make([][]kept, matchers)
	var mwg sync.WaitGroup
	for m := range matchers {
		mwg.Add(1)
		go func() {
			defer mwg.Done()
			rng := rand.New(rand.NewPCG(uint64(m), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%1024 == 0 {
					// Matches take no lock, so busy matchers would keep a
					// parked writer off the CPU until the scheduler preempts
					// them (10 ms); real callers block on I/O.
					runtime.Gosched()
				}
				tn := tenants[rng.IntN(len(tenants))]
				pt := patterns[rng.IntN(len(patterns))]
				got := r.Match(tn, pt.subj)
				if i%50 == 0 && len(keeps[m]) < 500 {
					keeps[m] = append(keeps[m], kept{got, slices.Clone(got)})
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	mwg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, ks := range keeps {
		for _, k := range ks {
			if !slices.Equal(k.got, k.want) {
				t.Fatalf("a Match result changed later: %v, was %v", k.got, k.want)
			}
		}
	}
	if r.Count() != 0 || r.NodeCount() != 0 {
		t.Fatalf("Count %d NodeCount %d after churn", r.Count(), r.NodeCount())
	}
}

// TestResultCache checks admission (on the second miss), hits, and
// invalidation by a change in the tenant but not by one in another tenant.
func TestResultCache(t *testing.T) {
	r := New[int](Config{})
	cached := func(tenant, subject string) bool {
		th := strhash(tenant, hashSeed)
		_, ok := r.cache.get(strhash(subject, th), tenant, subject)
		return ok
	}
	if err := r.Insert("t", "a.*", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Insert("u", "a.*", 1); err != nil {
		t.Fatal(err)
	}
	r.Match("t", "a.b")
	if cached("t", "a.b") {
		t.Fatal("cached after one miss")
	}
	r.Match("t", "a.b")
	r.Match("u", "a.b")
	r.Match("u", "a.b")
	if !cached("t", "a.b") || !cached("u", "a.b") {
		t.Fatal("not cached after two misses")
	}
	if cached("t", "a.c") || cached("v", "a.b") {
		t.Fatal("cache returned another key")
	}
	if err := r.Insert("t", "a.b", 2); err != nil {
		t.Fatal(err)
	}
	if cached("t", "a.b") {
		t.Fatal("entry survived a change in its tenant")
	}
	if !cached("u", "a.b") {
		t.Fatal("entry lost by a change in another tenant")
	}
	if got := sorted(r.Match("t", "a.b")); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("Match = %v", got)
	}
	if !cached("t", "a.b") {
		t.Fatal("stale entry not refreshed at once")
	}
	long := "a." + strings.Repeat("x", maxCachedSubject)
	for range 3 {
		if got := r.Match("t", long); !slices.Equal(got, []int{1}) {
			t.Fatalf("Match(long) = %v", got)
		}
	}
}
