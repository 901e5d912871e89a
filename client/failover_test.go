package client_test

// Issue 14's acceptance: a gateway node killed, its clients reconnect to
// another node through the same address list and resume receiving. Three
// "arq serve" processes share one NATS; the test kills one with SIGKILL.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/spinetest"
)

// node is one "arq serve" process started by a test.
type node struct {
	cmd *exec.Cmd
	url string
}

func buildArq(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "arq")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/arqonbus/arqonbus/cmd/arq")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// startNode runs "arq serve" in dir and waits until it has printed its
// addresses (and, in the dev default, its sample token: the dev secret is
// written by then).
func startNode(t *testing.T, bin, dir string, args ...string) *node {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &syncWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // this process only, by its PID
		_ = cmd.Wait()
	})
	n := &node{cmd: cmd}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	wsRe := regexp.MustCompile(`websocket: (ws://\S+)`)
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("arq serve exited early:\n%s", stderr.String())
			}
			if m := wsRe.FindStringSubmatch(l); m != nil {
				n.url = m[1]
			}
			done = n.url != "" && strings.Contains(l, "try:")
		case <-timeout:
			t.Fatalf("arq serve did not report its address:\n%s", stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return n
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestFailoverNodeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds arq and runs three gateway processes")
	}
	bin := buildArq(t)
	dir := t.TempDir()
	natsURL := spinetest.NATS(t)
	cfg := filepath.Join(dir, "node.toml")
	if err := os.WriteFile(cfg, []byte("[brain]\nenabled = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	var urls []string
	for i := 0; i < 3; i++ { // one after the other: the first writes the dev secret
		n := startNode(t, bin, dir, "--nats", natsURL, "--node-id", fmt.Sprintf("node-%d", i), "--config", cfg)
		nodes = append(nodes, n)
		urls = append(urls, n.url)
	}
	secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		t.Fatal(err)
	}
	mint := func(user string) string {
		tok, err := auth.Mint(secret, auth.MintOptions{Tenant: "dev", User: user, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	var tokens atomic.Int32
	disconnected := make(chan error, 10)
	reconnected := make(chan string, 10)
	sc, err := client.Dial(ctx, client.Options{
		URLs:          urls,
		Reconnect:     true,
		ReconnectWait: 50 * time.Millisecond,
		TokenFunc: func(context.Context) (string, error) {
			tokens.Add(1)
			return mint("subscriber"), nil
		},
		OnDisconnect: func(err error) { disconnected <- err },
		OnReconnect:  func(url string) { reconnected <- url },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sub, err := sc.Subscribe(ctx, "feed.>")
	if err != nil {
		t.Fatal(err)
	}
	victim := -1
	for i, u := range urls {
		if u == sc.ConnectedURL() {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("connected to %q, not one of %v", sc.ConnectedURL(), urls)
	}
	pubURL := urls[(victim+1)%3]
	pc, err := client.Dial(ctx, client.Options{URL: pubURL, Token: mint("publisher")})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Logf("subscriber on node-%d, publisher on %s", victim, pubURL)

	// Wait until a probe crosses from the publisher's node to the subscriber's.
	for i := 0; ; i++ {
		if err := pc.PublishAck(ctx, "feed.probe", []byte("probe"), client.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-sub.C:
		case <-time.After(100 * time.Millisecond):
			if i > 300 {
				t.Fatal("no probe arrived")
			}
			continue
		}
		break
	}
	for len(sub.C) > 0 {
		<-sub.C
	}

	// The receiver records every number; the publisher sends numbered
	// messages, one at a time with an ACK, until told to stop.
	var mu sync.Mutex
	got := map[int]int{}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for m := range sub.C {
			if m.Subject != "feed.n" {
				continue
			}
			n, err := strconv.Atoi(string(m.Data))
			if err != nil {
				t.Errorf("message %q", m.Data)
				continue
			}
			mu.Lock()
			got[n]++
			mu.Unlock()
		}
	}()
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	var started atomic.Int64 // the number being published (a message ≤ it may be in flight)
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		for n := 1; ; n++ {
			select {
			case <-stop:
				pubDone <- nil
				return
			default:
			}
			started.Store(int64(n))
			if err := pc.PublishAck(ctx, "feed.n", []byte(strconv.Itoa(n)), client.PublishOptions{}); err != nil {
				pubDone <- fmt.Errorf("publish %d: %w", n, err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for i := 0; received() < 100; i++ {
		if i > 3000 {
			t.Fatalf("only %d messages before the kill", received())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// SIGKILL the subscriber's node: no close frame, no drain.
	killedAt, killTime := started.Load(), time.Now()
	if err := nodes[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var why error
	select {
	case why = <-disconnected:
	case <-ctx.Done():
		t.Fatal("no OnDisconnect")
	}
	var url string
	select {
	case url = <-reconnected:
	case <-ctx.Done():
		t.Fatal("no OnReconnect")
	}
	mark := started.Load() // every number above it was published after the client was subscribed again
	took := time.Since(killTime)
	if url == urls[victim] || sc.ConnectedURL() == urls[victim] {
		t.Fatalf("reconnected to the killed node %s", url)
	}
	if tokens.Load() < 2 {
		t.Fatalf("TokenFunc called %d times", tokens.Load())
	}
	t.Logf("disconnected by %v after message %d; reconnected and resubscribed to %s (node %s) at message %d, %v after the kill",
		why, killedAt, url, sc.Welcome().NodeId, mark, took.Round(time.Millisecond))

	for started.Load() < mark+300 {
		select {
		case err := <-pubDone:
			t.Fatal(err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	last := int(started.Load())

	// Everything published after the reconnect arrives.
	missing := func() []int {
		mu.Lock()
		defer mu.Unlock()
		var m []int
		for n := int(mark) + 1; n <= last; n++ {
			if got[n] == 0 {
				m = append(m, n)
			}
		}
		return m
	}
	for i := 0; len(missing()) > 0; i++ {
		if i > 3000 {
			m := missing()
			t.Fatalf("%d of the %d messages published after the reconnect never arrived, e.g. %v", len(m), last-int(mark), m[:min(len(m), 10)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	lost, dups := 0, 0
	for n := 1; n <= last; n++ {
		if got[n] == 0 {
			lost++
		}
		if got[n] > 1 {
			dups++
		}
	}
	mu.Unlock()
	if dups > 0 {
		t.Fatalf("%d messages delivered twice", dups)
	}
	t.Logf("failover: %d messages published, %d lost (all published between the kill at %d and the resubscription at %d or in flight), %d after the reconnect all received",
		last, lost, killedAt, mark, last-int(mark))
	sc.Close()
	<-recvDone
}
