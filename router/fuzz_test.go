package router

import (
	"slices"
	"strings"
	"testing"
)

// FuzzMatch inserts the lines of patterns (alternately into tenants "x" and
// "y", values i%5, so some are duplicates) and compares Match on every line of
// subjects with the reference matcher, through a small cache, before and
// after removing half of them; then it removes the rest and checks that the
// Router is empty. Invalid patterns must fail with ValidatePattern's error;
// Match on invalid subjects must not panic.
func FuzzMatch(f *testing.F) {
	f.Add("a.b.c\na.*.c\na.>\n>\n*.b.*", "a.b.c\na.x.c\nb.b.b\na")
	f.Add("orders.*.created\norders.eu.>\n*.*.*", "orders.eu.created\norders.us.created.x")
	f.Fuzz(func(t *testing.T, patterns, subjects string) {
		r := New[int](Config{CacheSize: 8})
		var ref refRouter
		var subs []refSub
		tenants := []string{"x", "y"}
		for i, p := range strings.Split(patterns, "\n") {
			s := refSub{tenants[i%2], p, i % 5}
			err := r.Insert(s.tenant, s.pattern, s.v)
			want := ValidatePattern(p)
			if want == nil && slices.Contains(subs, s) {
				want = ErrExists
			}
			if err != want {
				t.Fatalf("Insert(%q) = %v, want %v", p, err, want)
			}
			if err == nil {
				subs = append(subs, s)
				ref.insert(s.tenant, s.pattern, s.v)
			}
		}
		check := func(stage string) {
			for _, subj := range strings.Split(subjects, "\n") {
				for _, tn := range tenants {
					for range 3 { // miss, miss (admitted), hit
						got := r.Match(tn, subj)
						if ValidateSubject(subj) != nil {
							continue
						}
						if want := ref.match(tn, subj); !slices.Equal(sorted(got), want) {
							t.Fatalf("%s: Match(%s, %q) = %v, want %v", stage, tn, subj, got, want)
						}
					}
				}
			}
			if r.Count() != len(subs) {
				t.Fatalf("%s: Count %d, want %d", stage, r.Count(), len(subs))
			}
		}
		check("inserted")
		for i := 0; i < len(subs); i++ {
			s := subs[i]
			if err := r.Remove(s.tenant, s.pattern, s.v); err != nil {
				t.Fatalf("Remove(%v): %v", s, err)
			}
			ref.remove(s.tenant, s.pattern, s.v)
			subs = slices.Delete(subs, i, i+1)
		}
		check("half removed")
		for _, s := range subs {
			if err := r.Remove(s.tenant, s.pattern, s.v); err != nil {
				t.Fatalf("Remove(%v): %v", s, err)
			}
		}
		if r.Count() != 0 || r.NodeCount() != 0 {
			t.Fatalf("Count %d NodeCount %d after removing all", r.Count(), r.NodeCount())
		}
	})
}

// FuzzValidate compares ValidateSubject and ValidatePattern with the
// reference validator.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a.b.c", "a.*.>", "a..b", "a*", ">.a", "a b", "\xff", "é.ü",
		strings.Repeat("a.", 20), strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidateSubject(s), refValidate(s, false); got != want {
			t.Fatalf("ValidateSubject(%q) = %v, want %v", s, got, want)
		}
		if got, want := ValidatePattern(s), refValidate(s, true); got != want {
			t.Fatalf("ValidatePattern(%q) = %v, want %v", s, got, want)
		}
	})
}
