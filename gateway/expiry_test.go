package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/gobwas/ws"
)

// expiringToken returns a token whose exp was 2 s ago, so the upgrade
// still accepts it (auth.Leeway is 5 s) even on a loaded machine, and the
// time at which the gateway is due to close its connection (exp +
// auth.Leeway).
func expiringToken(t *testing.T) (string, time.Time) {
	t.Helper()
	now := time.Now()
	tok, err := auth.Mint(testSecret, auth.MintOptions{Tenant: "t1", User: "expiring",
		Now: now.Add(-time.Minute), TTL: time.Minute - 2*time.Second})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(now.Add(-2*time.Second).Unix(), 0) // exp has whole seconds
	return tok, exp.Add(auth.Leeway)
}

// A connection whose token expires gets ERROR AUTHENTICATION_FAILED and
// close 1008, counted as a "token" timeout; a connection with a fresh token
// on the same node is untouched. With KeepExpiredSessions it stays open.
func TestTokenExpiry(t *testing.T) {
	t.Run("closed at exp", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, nil, func(c *Config) { c.SweepInterval = 20 * time.Millisecond })
		fresh := rawDial(t, n, token(t, "t1", "fresh"))
		tok, _ := expiringToken(t)
		r := rawDial(t, n, tok)
		got := r.readText()
		if !strings.Contains(got, `"op":"error"`) || !strings.Contains(got, "AUTHENTICATION_FAILED") ||
			!strings.Contains(got, "token expired") {
			t.Fatalf("got %s, want an AUTHENTICATION_FAILED error", got)
		}
		if code := r.expectClose(); code != 1008 {
			t.Fatalf("close code %d, want 1008", code)
		}
		if v := counterValue(t, n, "arq_timeouts_total"); v != 1 {
			t.Errorf("arq_timeouts_total = %v, want 1", v)
		}
		fresh.send(ws.OpText, `{"op":"ping","id":7}`)
		if got := fresh.readText(); got != `{"op":"pong","id":7}` {
			t.Fatalf("connection with a fresh token: %s", got)
		}
	})
	t.Run("kept when configured", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, nil, func(c *Config) {
			c.SweepInterval = 20 * time.Millisecond
			c.KeepExpiredSessions = true
		})
		tok, due := expiringToken(t)
		r := rawDial(t, n, tok)
		time.Sleep(time.Until(due) + 300*time.Millisecond) // 15 sweeps past due
		r.send(ws.OpText, `{"op":"ping","id":8}`)
		if got := r.readText(); got != `{"op":"pong","id":8}` {
			t.Fatalf("expired session with KeepExpiredSessions: %s", got)
		}
		if v := counterValue(t, n, "arq_timeouts_total"); v != 0 {
			t.Errorf("arq_timeouts_total = %v, want 0", v)
		}
	})
}
