package policy

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Modules that load but misbehave when asked: each Decide is a fail-closed
// deny with its reason, and the instance is replaced.
func TestHostileAtDecide(t *testing.T) {
	cases := []struct {
		file   string
		reason failReason
	}{
		{"loop.wasm", reasonTimeout},
		{"membomb.wasm", reasonMemoryLimit},
		{"trap.wasm", reasonTrap},
		{"badreturn.wasm", reasonBadReturn},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			e := newEngine(t, policyDir(t, map[string]string{c.file: "testdata/" + c.file}), func(cfg *Config) {
				if c.reason == reasonTimeout {
					cfg.Timeout = 20 * time.Millisecond
				}
				cfg.PoolSize = 1
			})
			for i := 1; i <= 3; i++ {
				start := time.Now()
				d := e.Decide(context.Background(), publish("t", "user", "x", text1K))
				if d.Allow || d.Code != CodePolicyError || d.Reason != c.reason.String() || d.Policy != c.file {
					t.Fatalf("call %d: %+v, want a %s deny", i, d, c.reason)
				}
				if c.reason == reasonTimeout && time.Since(start) > 2*time.Second {
					t.Errorf("the infinite loop ran %v", time.Since(start))
				}
				if got := testutil.ToFloat64(e.met.failClosed[c.reason]); got != float64(i) {
					t.Errorf("call %d: arqon_policy_fail_closed_total{reason=%q} = %v", i, c.reason, got)
				}
			}
			if got := testutil.ToFloat64(e.met.decisions[outcomeFailClosed]); got != 3 {
				t.Errorf("fail_closed decisions = %v, want 3", got)
			}
			// Each failed instance was discarded: none is idle.
			m := e.state.Load().modules[0]
			if len(m.idle) != 0 {
				t.Errorf("%d idle instances after failures, want 0", len(m.idle))
			}
		})
	}
}

// loadTimeHostile are modules rejected when loaded, with their reasons.
var loadTimeHostile = []struct {
	file   string
	reason failReason
}{
	{"garbage.wasm", reasonCompile},
	{"badsig.wasm", reasonBadSignature},
	{"noexport.wasm", reasonMissingExport},
	{"badabi.wasm", reasonABIVersion},
	{"wasi.wasm", reasonBadImport},
	{"bigmem.wasm", reasonMemoryLimit},
	{"badalloc.wasm", reasonAlloc},
	{"startloop.wasm", reasonTimeout},
}

// At start, a bad module makes New fail.
func TestHostileAtStart(t *testing.T) {
	for _, c := range loadTimeHostile {
		t.Run(c.file, func(t *testing.T) {
			dir := policyDir(t, map[string]string{c.file: "testdata/" + c.file})
			_, err := New(context.Background(), Config{Dir: dir, ReloadInterval: -1, LoadTimeout: 50 * time.Millisecond, Logger: quietLogger()})
			var le *LoadError
			if !errors.As(err, &le) || le.Reason != c.reason.String() || le.Path != c.file {
				t.Fatalf("New: %v, want a %s LoadError", err, c.reason)
			}
		})
	}
}

// Added by a reload with no previous version, a bad module denies every
// request it would have decided, with its load reason counted.
func TestHostileAtReload(t *testing.T) {
	for _, c := range loadTimeHostile {
		t.Run(c.file, func(t *testing.T) {
			dir := policyDir(t, nil)
			e := newEngine(t, dir, func(cfg *Config) { cfg.LoadTimeout = 50 * time.Millisecond })
			if d := e.Decide(context.Background(), connect("t", "u")); !d.Allow {
				t.Fatalf("empty dir: %+v", d)
			}
			copyFile(t, "testdata/"+c.file, dir+"/"+c.file)
			var le *LoadError
			if err := e.Reload(); !errors.As(err, &le) || le.Reason != c.reason.String() {
				t.Fatalf("Reload: %v, want a %s LoadError", err, c.reason)
			}
			for i := 1; i <= 2; i++ {
				d := e.Decide(context.Background(), connect("t", "u"))
				if d.Allow || d.Reason != c.reason.String() || d.Policy != c.file {
					t.Fatalf("Decide: %+v, want a %s deny", d, c.reason)
				}
				if got := testutil.ToFloat64(e.met.failClosed[c.reason]); got != float64(i) {
					t.Errorf("fail_closed{reason=%q} = %v, want %d", c.reason, got, i)
				}
			}
			if got := testutil.ToFloat64(e.met.reloadErrors); got != 1 {
				t.Errorf("reload errors = %v, want 1", got)
			}
			ps := e.Policies()
			if len(ps) != 1 || ps[0].Broken == nil {
				t.Errorf("Policies = %+v, want one broken", ps)
			}
		})
	}
}

// An infinite loop in one tenant's policy does not hold up other tenants.
//
// A looping guest holds its P (and its core) until its budget runs out:
// native code is not preempted by the Go scheduler. So the test loops on all
// but one core and needs at least two. A looping guest also delays the GC's
// stop-the-world phases (by 10-100ms here, see docs/POLICY.md), which stalls
// every goroutine, so the budget is generous.
func TestLoopDoesNotBlockOthers(t *testing.T) {
	procs := min(runtime.GOMAXPROCS(0), runtime.NumCPU())
	if procs < 2 {
		t.Skip("needs two cores and GOMAXPROCS >= 2")
	}
	dir := policyDir(t, map[string]string{
		"tenants/evil/loop.wasm":  "testdata/loop.wasm",
		"tenants/good/allow.wasm": "testdata/allow.wasm",
		"tenants/good/mw.wasm":    malware,
	})
	e := newEngine(t, dir, func(c *Config) {
		c.Timeout = time.Second
		c.PoolSize = procs - 1
	})
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { // before the engine closes, even after a Fatal
		close(stop)
		wg.Wait()
	})
	for range procs - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if d := e.Decide(ctx, publish("evil", "u", "x", nil)); d.Allow || d.Reason != "timeout" {
					t.Errorf("evil: %+v", d)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let the loops start
	deadline := time.Now().Add(600 * time.Millisecond)
	clean := 0
	for time.Now().Before(deadline) {
		t0 := time.Now()
		if d := e.Decide(ctx, publish("good", "u", "x", text1K)); !d.Allow {
			t.Fatalf("good tenant denied while another loops: %+v after %v (GOMAXPROCS %d)", d, time.Since(t0), runtime.GOMAXPROCS(0))
		}
		clean++
	}
	if clean < 10 {
		t.Errorf("only %d clean decisions in 600ms beside the loops", clean)
	}
	t.Logf("%d clean decisions while looping decisions ran", clean)
}
