package auth

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

func grants(t testing.TB, list ...string) *Grants {
	t.Helper()
	g, err := CompileCapabilities(list, false)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestCapabilityCovers(t *testing.T) {
	for _, c := range []struct {
		caps    []string
		pattern string
		want    bool
	}{
		{[]string{"chat.>"}, "chat.lobby", true},
		{[]string{"chat.>"}, "chat.*", true},
		{[]string{"chat.>"}, "chat.*.msg", true},
		{[]string{"chat.>"}, "chat.>", true},
		{[]string{"chat.>"}, "chat", false},
		{[]string{"chat.>"}, ">", false},
		{[]string{"chat.>"}, "*.lobby", false},
		{[]string{"chat.*"}, "chat.lobby", true},
		{[]string{"chat.*"}, "chat.*", true},
		{[]string{"chat.*"}, "chat.>", false},
		{[]string{"chat.*"}, "chat.a.b", false},
		{[]string{"chat.lobby"}, "chat.*", false},
		{[]string{"chat.lobby", "chat.other"}, "chat.*", false},
		{[]string{"chat.*.msg"}, "chat.1.msg", true},
		{[]string{"chat.*.msg"}, "chat.*.msg", true},
		{[]string{"chat.*.msg"}, "chat.*.*", false},
		{[]string{"chat.*.msg"}, "chat.>", false},
		// Several caps cover together what none covers alone.
		{[]string{"chat.*", "chat.*.>"}, "chat.>", true},
		{[]string{"chat.*", "chat.*.*", "chat.*.*.>"}, "chat.>", true},
		{[]string{"chat.*", "chat.*.*.>"}, "chat.>", false}, // chat.a.b
		{[]string{"chat.*", "chat.*.*"}, "chat.>", false},   // chat.a.b.c
		{[]string{"*", "*.>"}, ">", true},
		{[]string{">"}, ">", true},
		{[]string{">"}, "a.*.c", true},
		{[]string{"*.*"}, "a.b", true},
		{[]string{"*.*"}, "a.*", true},
		{[]string{"*.*"}, "a.>", false},
		{[]string{"a.*", "*.b"}, "*.*", false},
		{[]string{"a.*", "*.b"}, "a.b", true},
		{[]string{"a.b.>"}, "a.b", false}, // ">" needs one token or more
		{[]string{"a.*.>"}, "a.b.c.>", true},
		{[]string{"a.*.c"}, "a.*.c", true},
		{[]string{"a.*.c"}, "a.b.*", false},
		{nil, "a", false},
	} {
		g := grants(t, prefix("sub:", c.caps)...)
		if got := g.CanSubscribe(c.pattern); got != c.want {
			t.Errorf("caps %v, pattern %q: %v, want %v", c.caps, c.pattern, got, c.want)
		}
	}
}

func prefix(p string, list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = p + s
	}
	return out
}

func TestCapabilityCompile(t *testing.T) {
	if g, err := CompileCapabilities(nil, false); g != nil || err != nil {
		t.Fatalf("no claim: %v %v", g, err)
	}
	g, err := CompileCapabilities(nil, true)
	if g == nil || err != nil || g.CanSubscribe("a") || g.CanPublish("a") || g.CanPresence("a") {
		t.Fatalf("no claim, required: %v %v", g, err)
	}
	g, err = CompileCapabilities([]string{}, false)
	if g == nil || err != nil || g.CanPublish("a") {
		t.Fatalf("empty claim must allow nothing: %v %v", g, err)
	}
	var nilG *Grants
	if !nilG.CanSubscribe(">") || !nilG.CanPublish("a") || !nilG.CanPresence("a") || nilG.SubscribeNames("a", "a") {
		t.Fatal("nil grants")
	}
	g = grants(t, "sub:chat.>", "pub:chat.*.msg", "presence:room.*", "admin", "read", "x:y")
	for _, c := range []struct {
		ok   bool
		what string
	}{
		{g.CanSubscribe("chat.>"), "sub chat.>"},
		{!g.CanSubscribe("room.1"), "sub room.1"},
		{g.CanPublish("chat.1.msg"), "pub chat.1.msg"},
		{!g.CanPublish("chat.1.other"), "pub chat.1.other"},
		{!g.CanPublish("chat.1"), "pub chat.1"},
		{g.CanPresence("room.1"), "presence room.1"},
		{!g.CanPresence("chat.x"), "presence chat.x"},
	} {
		if !c.ok {
			t.Errorf("%s: wrong answer", c.what)
		}
	}
	for _, bad := range []string{"sub:", "pub:a..b", "sub:a.>.b", "presence:a b", "sub:a*"} {
		if _, err := CompileCapabilities([]string{"sub:ok", bad}, false); !errors.Is(err, ErrBadCapabilities) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	many := make([]string, MaxCapabilities+1)
	for i := range many {
		many[i] = "sub:a"
	}
	if _, err := CompileCapabilities(many, false); !errors.Is(err, ErrBadCapabilities) {
		t.Errorf("too many: %v", err)
	}
	g = grants(t, "sub:user.*.inbox", "sub:>")
	if !g.SubscribeNames("user.bob.inbox", "user") || g.SubscribeNames("user.bob.x", "user") || !g.CanSubscribe("user.bob.x") {
		t.Error("SubscribeNames")
	}
}

// covers agrees with brute force: every subject (over a small alphabet plus a
// token no pattern names) that the pattern matches is matched by a cap.
func TestCapabilityCoversBruteForce(t *testing.T) {
	toks := []string{"a", "b", "*", ">"}
	randPattern := func(r *rand.Rand) string {
		n := 1 + r.IntN(3)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = toks[r.IntN(3)] // no ">" inside
		}
		if r.IntN(3) == 0 {
			parts[n-1] = ">"
		}
		return strings.Join(parts, ".")
	}
	// Subjects up to 5 tokens over {a, b, z}: caps and patterns have at most
	// 3 tokens, so a gap in coverage shows at 4 tokens or fewer.
	var subjects []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		if n == 0 {
			return
		}
		for _, t := range []string{"a", "b", "z"} {
			s := t
			if prefix != "" {
				s = prefix + "." + t
			}
			subjects = append(subjects, s)
			gen(s, n-1)
		}
	}
	gen("", 5)
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 20000; iter++ {
		var caps []string
		for n := 1 + r.IntN(3); n > 0; n-- {
			caps = append(caps, randPattern(r))
		}
		p := randPattern(r)
		want := true
		for _, s := range subjects {
			if !match(p, s) {
				continue
			}
			ok := false
			for _, c := range caps {
				if match(c, s) {
					ok = true
					break
				}
			}
			if !ok {
				want = false
				break
			}
		}
		if got := grants(t, prefix("sub:", caps)...).CanSubscribe(p); got != want {
			t.Fatalf("caps %v, pattern %q: covers %v, brute force %v", caps, p, got, want)
		}
	}
}

// match is NATS matching of a literal subject by a pattern.
func match(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, t := range p {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || t != "*" && t != s[i] {
			return false
		}
	}
	return len(p) == len(s)
}

func BenchmarkCanPublish(b *testing.B) {
	g := grants(b, "sub:chat.>", "pub:chat.*.typing", "pub:orders.*.created", "pub:chat.*.msg", "presence:room.*")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !g.CanPublish("chat.lobby.msg") {
			b.Fatal("denied")
		}
	}
}

func BenchmarkCanSubscribe(b *testing.B) {
	g := grants(b, "sub:chat.*", "sub:chat.*.>", "pub:chat.*.msg")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !g.CanSubscribe("chat.>") {
			b.Fatal("denied")
		}
	}
}

// Both paths tell an empty capabilities claim (grants nothing) from none.
func TestEmptyCapabilitiesClaim(t *testing.T) {
	v, _ := NewVerifier(secret)
	tok, _ := Mint(secret, MintOptions{Tenant: "acme", User: "u"})
	id, err := v.Verify(tok)
	if err != nil || id.Capabilities != nil {
		t.Fatalf("no claim: %#v %v", id.Capabilities, err)
	}
	tok = sign(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"u","tenant_id":"t","exp":`+itoa(time.Now().Unix()+60)+`,"iat":`+itoa(time.Now().Unix())+`,"capabilities":[]}`)
	fast, ok := v.fastVerify(tok, time.Now())
	slow, err := v.slowVerify(tok)
	if !ok || err != nil || fast.Capabilities == nil || slow.Capabilities == nil {
		t.Fatalf("empty claim: fast %#v (%v), slow %#v (%v)", fast.Capabilities, ok, slow.Capabilities, err)
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
