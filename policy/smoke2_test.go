package policy

import (
	"context"
	"testing"
	"time"
)

func BenchmarkSmoke(b *testing.B) {
	dir := policyDir(b, map[string]string{"30-malware.wasm": examples + "/30-malware.wasm"})
	e := newEngine(b, dir, func(c *Config) { c.Timeout = 2 * time.Millisecond })
	req := publish("t", "user", "chat.x", text1K)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, req)
	}
}
func BenchmarkSmokeEmpty(b *testing.B) {
	dir := policyDir(b, map[string]string{"30-malware.wasm": examples + "/30-malware.wasm"})
	e := newEngine(b, dir, func(c *Config) { c.Timeout = 2 * time.Millisecond })
	req := publish("t", "user", "chat.x", nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, req)
	}
}

func BenchmarkSmokeAllow(b *testing.B) {
	dir := policyDir(b, map[string]string{"a.wasm": "testdata/allow.wasm"})
	e := newEngine(b, dir, func(c *Config) { c.Timeout = 2 * time.Millisecond })
	req := publish("t", "user", "chat.x", nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(ctx, req)
	}
}
