package policy

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// benchPolicies are the chains the benchmarks run: none (the Default
// answer), allow (a policy that does nothing: the cost of one guest call),
// each example policy alone, and the three examples as one chain.
var benchPolicies = []struct {
	name  string
	files map[string]string
}{
	{"none", nil},
	{"allow", map[string]string{"a.wasm": "testdata/allow.wasm"}},
	{"size-cap", map[string]string{"10-size-cap.wasm": sizeCap}},
	{"acl", map[string]string{"20-acl.wasm": acl}},
	{"malware", map[string]string{"30-malware.wasm": malware}},
	{"chain", map[string]string{"10-size-cap.wasm": sizeCap, "20-acl.wasm": acl, "30-malware.wasm": malware}},
}

var benchPayloads = []struct {
	name    string
	payload []byte
}{
	{"payload=0B", nil},
	{"payload=1KiB", text1K},
}

// benchEngine starts an engine with production settings (2ms budget, default
// pool) for one chain.
func benchEngine(b *testing.B, files map[string]string) *Engine {
	dir := ""
	if files != nil {
		dir = policyDir(b, files)
	}
	return newEngine(b, dir, func(c *Config) {
		c.Timeout = 0
		c.PoolSize = 0
	})
}

// reportFailClosed reports fail-closed decisions (timeouts on a busy
// machine) so that they cannot hide in the averages.
func reportFailClosed(b *testing.B, e *Engine) {
	if n := testutil.ToFloat64(e.met.decisions[outcomeFailClosed]); n > 0 {
		b.ReportMetric(n, "fail-closed")
	}
}

// BenchmarkDecide measures one decision on a clean PUBLISH request.
func BenchmarkDecide(b *testing.B) {
	for _, p := range benchPolicies {
		for _, pl := range benchPayloads {
			b.Run("policy="+p.name+"/"+pl.name, func(b *testing.B) {
				e := benchEngine(b, p.files)
				req := publish("acme", "user", "chat.lobby", pl.payload)
				ctx := context.Background()
				for range 100 { // warm the pool
					e.Decide(ctx, req)
				}
				if d := e.Decide(ctx, req); !d.Allow && d.Reason != "timeout" {
					b.Fatalf("clean request denied: %+v", d)
				}
				b.ReportAllocs()
				for b.Loop() {
					e.Decide(ctx, req)
				}
				reportFailClosed(b, e)
			})
		}
	}
}

// BenchmarkDecideParallel runs decisions from GOMAXPROCS goroutines.
func BenchmarkDecideParallel(b *testing.B) {
	for _, p := range benchPolicies[1:] {
		b.Run("policy="+p.name+"/payload=1KiB", func(b *testing.B) {
			e := benchEngine(b, p.files)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := publish("acme", "user", "chat.lobby", text1K)
				for pb.Next() {
					e.Decide(ctx, req)
				}
			})
			reportFailClosed(b, e)
		})
	}
}

// BenchmarkDecideLatency times every decision on its own and reports the
// median and 99th percentile. Run it with -benchtime=100000x for N = 100k.
func BenchmarkDecideLatency(b *testing.B) {
	for _, p := range benchPolicies[1:] {
		for _, pl := range benchPayloads {
			b.Run("policy="+p.name+"/"+pl.name, func(b *testing.B) {
				e := benchEngine(b, p.files)
				req := publish("acme", "user", "chat.lobby", pl.payload)
				latency(b, e, req)
			})
		}
	}
	b.Run("policy=malware/payload=1KiB/denied", func(b *testing.B) {
		e := benchEngine(b, map[string]string{"30-malware.wasm": malware})
		latency(b, e, publish("acme", "user", "chat.lobby", withWord(text1K, 1000, "malware")))
	})
}

// latency runs b.N timed decisions of req and reports p50-ns and p99-ns.
func latency(b *testing.B, e *Engine, req *pb.PolicyRequest) {
	ctx := context.Background()
	for range 1000 { // warm the pool
		e.Decide(ctx, req)
	}
	ds := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		e.Decide(ctx, req)
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(ds[len(ds)*99/100].Nanoseconds()), "p99-ns")
	reportFailClosed(b, e)
}
