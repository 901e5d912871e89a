package policy

import (
	"context"
	"testing"

	"github.com/arqonbus/arqonbus/pb"
)

// wazeroAllocsPerCall is what one guest call allocates inside wazero with
// WithCloseOnContextDone: the channel, the closure and the goroutine of
// ModuleInstance.CloseModuleOnCanceledOrTimeout. The engine itself adds
// nothing on a clean decision (nor on a repeated deny).
const wazeroAllocsPerCall = 3

// goroutineSlack allows, per guest call, for the runtime allocating a fresh
// goroutine descriptor when its free list runs dry: wazero's watcher
// goroutines exit asynchronously, so the count varies from run to run.
const goroutineSlack = 1

func TestDecideAllocs(t *testing.T) {
	ctx := context.Background()
	none := newEngine(t, "", nil)
	chain := newEngine(t, policyDir(t, map[string]string{
		"10-size-cap.wasm": sizeCap, "20-acl.wasm": acl, "30-malware.wasm": malware,
	}), nil)
	cases := []struct {
		name  string
		e     *Engine
		req   *pb.PolicyRequest
		calls int
	}{
		{"no policy", none, publish("t", "user", "chat.x", text1K), 0},
		{"no policy, deny-all default", newEngine(t, "", func(c *Config) { c.Default = DenyAll }), connect("t", "u"), 0},
		{"connect, not covered", chain, connect("t", "user"), 0},
		{"subscribe, ACL", chain, subscribe("t", "user", "chat.x"), 1},
		{"publish 1KiB, 3 policies", chain, publish("t", "user", "chat.x", text1K), 3},
		{"publish denied by ACL", chain, publish("t", "reader", "chat.x", text1K), 2},
		{"publish denied by malware", chain, publish("t", "user", "chat.x", []byte("malware")), 3},
	}
	for _, c := range cases {
		c.e.Decide(ctx, c.req) // warm the pool and the message cache
		got := testing.AllocsPerRun(200, func() { c.e.Decide(ctx, c.req) })
		t.Logf("%s: %.1f allocs per decision (%d guest calls)", c.name, got, c.calls)
		if limit := float64((wazeroAllocsPerCall + goroutineSlack) * c.calls); got > limit {
			t.Errorf("%s: %.1f allocs per decision, want <= %.0f", c.name, got, limit)
		}
	}
}
