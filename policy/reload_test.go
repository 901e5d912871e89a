package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHotSwap(t *testing.T) {
	dir := policyDir(t, nil)
	p := filepath.Join(dir, "p.wasm")
	copyFile(t, "testdata/allow.wasm", p)
	e := newEngine(t, dir, nil)
	ctx := context.Background()
	bad := publish("t", "user", "chat.x", []byte("some malware here"))
	good := publish("t", "user", "chat.x", text1K)

	check(t, "allow policy", e.Decide(ctx, bad), want{allow: true})
	gen := e.Generation()
	if err := e.Reload(); err != nil || e.Generation() != gen {
		t.Fatalf("Reload without changes: %v, generation %d -> %d", err, gen, e.Generation())
	}

	copyFile(t, malware, p)
	if err := e.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if e.Generation() == gen {
		t.Error("generation unchanged by a swap")
	}
	gen = e.Generation()
	check(t, "malware policy", e.Decide(ctx, bad), want{code: "POLICY_BLOCKED", policy: "p.wasm"})
	check(t, "malware policy, clean", e.Decide(ctx, good), want{allow: true})

	copyFile(t, "testdata/garbage.wasm", p)
	err := e.Reload()
	var le *LoadError
	if !errors.As(err, &le) || le.Reason != "compile" || le.Path != "p.wasm" {
		t.Fatalf("Reload of garbage: %v, want a compile LoadError", err)
	}
	check(t, "old policy stays", e.Decide(ctx, bad), want{code: "POLICY_BLOCKED", policy: "p.wasm"})
	check(t, "old policy stays, clean", e.Decide(ctx, good), want{allow: true})
	if e.Generation() != gen {
		t.Error("generation changed by a failed reload")
	}
	if got := testutil.ToFloat64(e.met.reloadErrors); got != 1 {
		t.Errorf("reload errors = %v, want 1", got)
	}
	// The same broken content is reported by every Reload, counted once.
	if err := e.Reload(); err == nil {
		t.Error("second Reload of garbage: no error")
	}
	if got := testutil.ToFloat64(e.met.reloadErrors); got != 1 {
		t.Errorf("reload errors after a second Reload = %v, want 1", got)
	}
	if ps := e.Policies(); len(ps) != 1 || ps[0].Broken != nil || ps[0].LoadError == nil {
		t.Errorf("Policies = %+v, want the old version with a LoadError", ps)
	}

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(); err != nil {
		t.Fatalf("Reload after delete: %v", err)
	}
	check(t, "deleted", e.Decide(ctx, bad), want{allow: true})
	if e.HasPolicies("t") || len(e.Policies()) != 0 {
		t.Error("deleted policy still listed")
	}
}

func TestBrokenNewFileThenFixed(t *testing.T) {
	dir := policyDir(t, nil)
	e := newEngine(t, dir, nil)
	ctx := context.Background()
	p := filepath.Join(dir, "tenants", "acme", "p.wasm")
	copyFile(t, "testdata/noexport.wasm", p)
	if err := e.Reload(); err == nil {
		t.Fatal("Reload: no error")
	}
	d := e.Decide(ctx, publish("acme", "u", "x", nil))
	if d.Allow || d.Reason != "missing_export" || d.Policy != "tenants/acme/p.wasm" {
		t.Errorf("broken new policy: %+v", d)
	}
	check(t, "other tenant unaffected", e.Decide(ctx, publish("other", "u", "x", nil)), want{allow: true})
	copyFile(t, "testdata/allow.wasm", p)
	if err := e.Reload(); err != nil {
		t.Fatalf("Reload of the fix: %v", err)
	}
	check(t, "fixed", e.Decide(ctx, publish("acme", "u", "x", nil)), want{allow: true})
}

func TestPolling(t *testing.T) {
	dir := policyDir(t, nil)
	e := newEngine(t, dir, func(c *Config) { c.ReloadInterval = 10 * time.Millisecond })
	ctx := context.Background()
	bad := publish("t", "user", "chat.x", []byte("malware"))
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	copyFile(t, malware, filepath.Join(dir, "m.wasm"))
	waitFor("the policy to load", func() bool { return !e.Decide(ctx, bad).Allow })
	copyFile(t, "testdata/garbage.wasm", filepath.Join(dir, "m.wasm"))
	waitFor("the reload error", func() bool { return testutil.ToFloat64(e.met.reloadErrors) == 1 })
	if e.Decide(ctx, bad).Allow {
		t.Error("the broken replacement dropped the policy in force")
	}
	if err := os.Remove(filepath.Join(dir, "m.wasm")); err != nil {
		t.Fatal(err)
	}
	waitFor("the policy to go", func() bool { return e.Decide(ctx, bad).Allow })
	// A vanished directory keeps the policies in force and is reported once.
	copyFile(t, malware, filepath.Join(dir, "m.wasm"))
	waitFor("the policy to load again", func() bool { return !e.Decide(ctx, bad).Allow })
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(moved) })
	waitFor("the scan error", func() bool { return testutil.ToFloat64(e.met.reloadErrors) == 2 })
	time.Sleep(50 * time.Millisecond)
	if got := testutil.ToFloat64(e.met.reloadErrors); got != 2 {
		t.Errorf("reload errors = %v, want 2 (a lasting scan error counts once)", got)
	}
	if e.Decide(ctx, bad).Allow {
		t.Error("policies dropped when the directory vanished")
	}
}

// Decisions keep flowing, without fail-closed denies, while modules are
// swapped under them.
func TestSwapUnderLoad(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.wasm": "testdata/allow.wasm"})
	e := newEngine(t, dir, func(c *Config) { c.PoolSize = 2 })
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(halt) // before the engine closes, even after a Fatal
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := publish("t", "user", "chat.x", []byte("malware"))
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				if d := e.Decide(ctx, req); !d.Allow && d.Code != "POLICY_BLOCKED" {
					t.Errorf("during swaps: %+v after %v", d, time.Since(t0))
					return
				}
			}
		}()
	}
	srcs := []string{malware, "testdata/allow.wasm", acl}
	var old []*module
	for i := range 30 {
		old = append(old, e.state.Load().modules...)
		copyFile(t, srcs[i%len(srcs)], filepath.Join(dir, "p.wasm"))
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	halt()
	// Every swapped-out module closed its instances and compiled code.
	for _, m := range old {
		select {
		case <-m.drained:
		case <-time.After(5 * time.Second):
			t.Fatalf("retired module %s still has %d live instances", m.name, m.live)
		}
	}
	if got := testutil.ToFloat64(e.met.decisions[outcomeFailClosed]); got != 0 {
		t.Errorf("%v fail-closed decisions during swaps", got)
	}
	if got := testutil.ToFloat64(e.met.reloads); got < 30 {
		t.Errorf("reloads = %v, want >= 30", got)
	}
}
