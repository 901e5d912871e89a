package policy

import (
	"context"
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	dir := policyDir(t, map[string]string{"30-malware.wasm": examples + "/30-malware.wasm"})
	e := newEngine(t, dir, func(c *Config) { c.Timeout = 2 * time.Millisecond })
	req := publish("t", "user", "chat.x", text1K)
	ctx := context.Background()
	a := testing.AllocsPerRun(1000, func() { e.Decide(ctx, req) })
	t.Logf("allocs %v", a)
	start := time.Now()
	for i := 0; i < 100000; i++ {
		e.Decide(ctx, req)
	}
	t.Logf("%v per decide", time.Since(start)/100000)
}
