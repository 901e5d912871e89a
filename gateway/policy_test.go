package gateway

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/policy"
)

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// User Story 3 over real sockets: "malware" is blocked with POLICY_BLOCKED
// and reaches nobody; clean messages flow; each hostile module denies while
// the gateway keeps serving other tenants.
func TestPolicyOverSockets(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, "../policies/30-malware.wasm", filepath.Join(dir, "tenants", "clean", "30-malware.wasm"))
	hostile := []string{"loop", "membomb", "trap", "badreturn"}
	for _, h := range hostile {
		copyFile(t, "../policy/testdata/"+h+".wasm", filepath.Join(dir, "tenants", h, h+".wasm"))
	}
	eng, err := policy.New(context.Background(), policy.Config{Dir: dir, ReloadInterval: -1, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close(context.Background()) })
	n := startNode(t, nil, func(c *Config) { c.Policy = eng })

	pub := dial(t, n, "clean", "pub", client.JSON)
	sub := dial(t, n, "clean", "sub", client.Protobuf)
	s, err := sub.Subscribe(ctx(t), "chat.>")
	if err != nil {
		t.Fatal(err)
	}
	err = pub.PublishAck(ctx(t), "chat.lobby", []byte("download this malware now"), client.PublishOptions{})
	var se *client.ServerError
	if !asServerError(err, &se) || se.Code != "POLICY_BLOCKED" {
		t.Fatalf("malware publish: %v", err)
	}
	if err := pub.PublishAck(ctx(t), "chat.lobby", []byte("hello"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, s); string(m.Data) != "hello" {
		t.Fatalf("subscriber got %q first; the blocked message leaked?", m.Data)
	}

	// Hostile modules deny (fail-closed) while clean traffic keeps flowing.
	var wg sync.WaitGroup
	errs := make(chan string, len(hostile))
	for _, h := range hostile {
		wg.Add(1)
		go func(h string) {
			defer wg.Done()
			// The module applies to every action, so CONNECT already
			// fails closed: HTTP 403, no upgrade.
			for i := 0; i < 3; i++ {
				c, err := client.Dial(context.Background(), client.Options{URL: n.url, Token: token(t, h, "u")})
				if err == nil {
					c.Close()
				}
				if !errors.Is(err, client.ErrForbidden) || !strings.Contains(err.Error(), "POLICY_ERROR") {
					errs <- h + ": " + errString(err)
					return
				}
			}
		}(h)
	}
	for i := 0; i < 50; i++ {
		if err := pub.PublishAck(ctx(t), "chat.lobby", []byte("clean"), client.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, s); string(m.Data) != "clean" {
			t.Fatalf("got %q", m.Data)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error("hostile module did not deny: " + e)
	}
	if v := counterValue(t, n, "arq_policy_denies_total"); v < 1+3*float64(len(hostile)) {
		t.Fatalf("policy denies counted %v", v)
	}
}

func asServerError(err error, target **client.ServerError) bool {
	se, ok := err.(*client.ServerError)
	if ok {
		*target = se
	}
	return ok
}

func errString(err error) string {
	if err == nil {
		return "allowed"
	}
	return strings.TrimSpace(err.Error())
}
