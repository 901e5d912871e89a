package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
)

// TestAPIDocExamples runs every sh block of docs/API.md, verbatim, with
// bash against a dev-default arq serve, and checks that a WebSocket
// subscriber receives what the examples publish.
func TestAPIDocExamples(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed (scripts/deps.sh installs it)")
	}
	doc, err := os.ReadFile("../../docs/API.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 6 {
		t.Fatalf("docs/API.md has %d sh blocks, expected one per endpoint", len(blocks))
	}
	bin := buildArq(t)
	dir := t.TempDir()
	s := startServe(t, bin, dir)
	var key string
	for _, l := range s.stdout {
		if m := regexp.MustCompile(`api key:\s+(\S+)`).FindStringSubmatch(l); m != nil {
			key = m[1]
		}
	}
	if key == "" {
		t.Fatalf("arq serve printed no API key:\n%s", strings.Join(s.stdout, "\n"))
	}
	apiBase := strings.TrimSuffix(s.adminURL, "/")

	secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Mint(secret, auth.MintOptions{Tenant: "dev", User: "watcher", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: s.wsURL, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	orders, err := c.Subscribe(ctx, "orders.>")
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := c.Subscribe(ctx, "user.*.inbox")
	if err != nil {
		t.Fatal(err)
	}

	for i, b := range blocks {
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", b[1])
		cmd.Env = append(os.Environ(), "ARQ_API="+apiBase, "ARQ_API_KEY="+key)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("docs/API.md sh block %d failed: %v\n%s\n--- output:\n%s", i+1, err, b[1], out)
		}
		if !strings.HasPrefix(strings.TrimSpace(string(out)), "{") {
			t.Fatalf("block %d answered %q, not JSON", i+1, out)
		}
	}
	want := map[string]string{"orders.42.shipped": "your order has shipped", "orders.43.shipped": "shipped", "orders.44.shipped": "shipped"}
	for len(want) > 0 {
		select {
		case m := <-orders.C:
			if want[m.Subject] != string(m.Data) {
				t.Fatalf("unexpected %s %q", m.Subject, m.Data)
			}
			delete(want, m.Subject)
		case <-ctx.Done():
			t.Fatalf("not delivered: %v", want)
		}
	}
	for n := 0; n < 2; n++ {
		select {
		case m := <-inbox.C:
			if string(m.Data) != "maintenance at 22:00" {
				t.Fatalf("broadcast delivered %q", m.Data)
			}
		case <-ctx.Done():
			t.Fatal("broadcast not delivered to both inboxes")
		}
	}
	// The CLI finds the dev key by itself.
	out := run(t, dir, bin, "api", "publish", "--url", apiBase, "orders.45.shipped", "from the CLI")
	_ = out
	select {
	case m := <-orders.C:
		if m.Subject != "orders.45.shipped" || string(m.Data) != "from the CLI" {
			t.Fatalf("CLI publish delivered %s %q", m.Subject, m.Data)
		}
	case <-ctx.Done():
		t.Fatal("CLI publish not delivered")
	}
}
