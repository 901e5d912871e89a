package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/spinetest"
	"github.com/arqonbus/arqonbus/internal/valkeytest"
)

// TestPresenceNodeKilled is User Story 4 across processes: two arq serve
// nodes on one NATS, a brain process on a real Valkey. A member on node A
// sees node B's members join, the query lists everyone, and when node B's
// process is killed with SIGKILL every one of its members leaves
// ("node_down") within the TTL plus a heartbeat.
func TestPresenceNodeKilled(t *testing.T) {
	bin := buildArq(t)
	dir := t.TempDir()
	natsURL := spinetest.NATS(t)
	vk := valkeytest.Start(t)
	const ttl, heartbeat = 3 * time.Second, time.Second

	cfg := filepath.Join(dir, "node.toml")
	writeFile(t, cfg, "[brain]\nenabled = false\nheartbeat_interval = \"1s\"\n")
	bcfg := filepath.Join(dir, "brain.toml")
	writeFile(t, bcfg, "[brain]\nnode_ttl = \"3s\"\n")

	brainAdmin := startBrainProc(t, bin, dir, "--nats", natsURL, "--valkey", vk.Addr(), "--config", bcfg, "--admin", "127.0.0.1:0")
	na := startServe(t, bin, dir, "--nats", natsURL, "--node-id", "node-a", "--config", cfg)
	nb := startServe(t, bin, dir, "--nats", natsURL, "--node-id", "node-b", "--config", cfg)
	for _, s := range []*served{na, nb} {
		if !strings.Contains(strings.Join(s.stdout, "\n"), "brain:     elsewhere") {
			t.Fatalf("node does not say its brain runs elsewhere:\n%s", strings.Join(s.stdout, "\n"))
		}
	}
	secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		t.Fatal(err)
	}
	dialAs := func(url, user string) *client.Client {
		tok, err := auth.Mint(secret, auth.MintOptions{Tenant: "dev", User: user, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Options{URL: url, Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a := dialAs(na.wsURL, "alice")
	room, err := a.SubscribePresence(ctx, "room.1", []byte(`{"name":"Alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{a.Welcome().SessionId: true}
	bSessions := map[string]bool{}
	for _, user := range []string{"bob", "bob", "carol"} { // bob twice: two members, one user
		c := dialAs(nb.wsURL, user)
		if _, err := c.SubscribePresence(ctx, "room.1", nil); err != nil {
			t.Fatal(err)
		}
		want[c.Welcome().SessionId] = true
		bSessions[c.Welcome().SessionId] = true
	}
	// alice hears every join from the other node.
	for joined := map[string]bool{}; len(joined) < len(bSessions); {
		select {
		case ev := <-room.Presence:
			if ev.Type == client.PresenceUpdate && bSessions[ev.Member.Session] {
				if ev.Member.Node != "node-b" {
					t.Fatalf("join %+v: node %q", ev.Member, ev.Member.Node)
				}
				joined[ev.Member.Session] = true
			}
		case <-ctx.Done():
			t.Fatal("joins from node-b did not arrive")
		}
	}
	all, err := a.PresenceAll(ctx, "room.1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range all.Members {
		if !want[m.Session] {
			t.Fatalf("unexpected member %+v", m)
		}
		got = append(got, m.Session)
	}
	sort.Strings(got)
	if len(got) != len(want) || all.Count != 4 || all.Users != 3 {
		t.Fatalf("members %v count %d users %d, want 4 members of 3 users", got, all.Count, all.Users)
	}

	// SIGKILL node-b: no goodbye, only silence.
	if err := nb.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = nb.cmd.Wait()
	bound := ttl + heartbeat + 5*time.Second // generous: a loaded CI machine
	deadline := time.After(bound)
	var last time.Duration
	for left := 0; left < len(bSessions); {
		select {
		case ev := <-room.Presence:
			if ev.Type != client.PresenceLeave {
				continue
			}
			if !bSessions[ev.Member.Session] || ev.Reason != "node_down" {
				t.Fatalf("leave %+v reason %q", ev.Member, ev.Reason)
			}
			left++
			last = time.Since(killed)
		case <-deadline:
			t.Fatalf("%d of %d members of the killed node left within %v", left, len(bSessions), bound)
		}
	}
	t.Logf("all %d members of the killed node left %v after SIGKILL (TTL %v, heartbeat %v)", len(bSessions), last.Round(time.Millisecond), ttl, heartbeat)

	// The brain is ready and counts what it did.
	if code, body := get(t, brainAdmin+"/readyz"); code != 200 {
		t.Fatalf("brain /readyz: %d %s", code, body)
	}
	_, metrics := get(t, brainAdmin+"/metrics")
	for _, name := range []string{`arq_brain_leaves_total{reason="node_down"} 3`, "arq_brain_joins_total 4", "arq_brain_nodes_expired_total 1"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("brain metrics lack %q", name)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startBrainProc runs "arq brain" and returns its admin base URL.
func startBrainProc(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"brain"}, args...)...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	re := regexp.MustCompile(`admin:\s+(http://\S+)/metrics`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case u := <-found:
		return u
	case <-time.After(30 * time.Second):
		t.Fatal("arq brain did not report its admin address")
		return ""
	}
}
