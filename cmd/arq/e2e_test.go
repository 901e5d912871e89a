package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
)

// buildArq compiles the arq binary once per test run.
func buildArq(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "arq")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

type served struct {
	cmd      *exec.Cmd
	wsURL    string
	adminURL string
	stdout   []string
}

// startServe runs "arq serve" (with extra flags) in dir on free ports and waits until it
// prints where it serves.
func startServe(t *testing.T, bin, dir string, extra ...string) *served {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, extra...)...)
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	wsRe := regexp.MustCompile(`websocket: (wss?://\S+)`)
	adminRe := regexp.MustCompile(`admin:\s+(http://\S+)/metrics`)
	timeout := time.After(30 * time.Second)
	for s.wsURL == "" || s.adminURL == "" || !strings.Contains(strings.Join(s.stdout, "\n"), "try:") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("arq serve exited early; output:\n%s", strings.Join(s.stdout, "\n"))
			}
			s.stdout = append(s.stdout, l)
			if m := wsRe.FindStringSubmatch(l); m != nil {
				s.wsURL = m[1]
			}
			if m := adminRe.FindStringSubmatch(l); m != nil {
				s.adminURL = m[1]
			}
		case <-timeout:
			t.Fatalf("arq serve did not report its addresses; output:\n%s", strings.Join(s.stdout, "\n"))
		}
	}
	go func() {
		for range lines {
		}
	}()
	return s
}

func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("arq %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNewcomer drives the built binary as a newcomer would: arq serve in an
// empty directory, arq token, and arq sub receiving what arq pub sends.
func TestNewcomer(t *testing.T) {
	bin := buildArq(t)
	dir := t.TempDir()
	s := startServe(t, bin, dir)
	out := strings.Join(s.stdout, "\n")
	if !strings.Contains(out, "dev secret: .arqon/dev-secret (created") {
		t.Fatalf("serve output:\n%s", out)
	}
	fi, err := os.Stat(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev secret mode %v", fi.Mode().Perm())
	}
	secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewVerifier(secret)

	// The sample token printed by serve is valid.
	tokRe := regexp.MustCompile(`^eyJ[\w-]+\.[\w-]+\.[\w-]+$`)
	var sample string
	for _, l := range s.stdout {
		if tokRe.MatchString(l) {
			sample = l
		}
	}
	if id, err := v.Verify(sample); err != nil || id.Tenant != "dev" {
		t.Fatalf("sample token %q: %v %+v", sample, err, id)
	}

	// arq token prints the token alone on one line.
	tokOut := run(t, dir, bin, "token", "--tenant", "acme", "--sub", "alice", "--ttl", "10m")
	if strings.Count(tokOut, "\n") != 1 || !tokRe.MatchString(strings.TrimSpace(tokOut)) {
		t.Fatalf("token output %q", tokOut)
	}
	tok := strings.TrimSpace(tokOut)
	if id, err := v.Verify(tok); err != nil || id.Tenant != "acme" || id.User != "alice" {
		t.Fatalf("minted token: %v %+v", err, id)
	}

	// arq sub receives what arq pub sends.
	sub := exec.Command(bin, "sub", "chat.>", "--url", s.wsURL, "--token", tok, "--count", "1")
	sub.Dir = dir
	var subOut bytes.Buffer
	sub.Stdout = &subOut
	subErr, _ := sub.StderrPipe()
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(subErr)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.Contains(line, "subscribed to chat.>") {
		t.Fatalf("arq sub: %q %v", line, err)
	}
	go io.Copy(io.Discard, rd)
	pubTok := strings.TrimSpace(run(t, dir, bin, "token", "--tenant", "acme", "--sub", "bob"))
	run(t, dir, bin, "pub", "chat.lobby", "hello world", "--url", s.wsURL, "--token", pubTok)
	waited := make(chan error, 1)
	go func() { waited <- sub.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("arq sub: %v", err)
		}
	case <-time.After(20 * time.Second):
		_ = sub.Process.Kill()
		t.Fatal("arq sub did not receive the message")
	}
	if got := subOut.String(); got != "chat.lobby hello world\n" {
		t.Fatalf("arq sub printed %q", got)
	}

	// A pub minted from the dev secret in the working directory (tenant dev)
	// works too.
	run(t, dir, bin, "pub", "chat.lobby", "x", "--url", s.wsURL)

	// Admin endpoints.
	if code, body := get(t, s.adminURL+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", code, body)
	}
	if code, _ := get(t, s.adminURL+"/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	_, metrics := get(t, s.adminURL+"/metrics")
	for _, want := range []string{"arq_connections ", "arq_messages_in_total 2", "arq_messages_out_total 1", "arq_route_duration_seconds_bucket"} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}

	// arq status summarizes the node from its admin listener.
	adminAddr := strings.TrimPrefix(s.adminURL, "http://")
	status := run(t, dir, bin, "status", "--admin", adminAddr)
	for _, want := range []string{": ready\n", "connections    ", "messages       in 2, out 1, dropped 0", "spine (NATS)   connected", "open files "} {
		if !strings.Contains(status, want) {
			t.Fatalf("arq status lacks %q:\n%s", want, status)
		}
	}
	var js struct {
		Ready      bool    `json:"ready"`
		NodeID     string  `json:"node_id"`
		MessagesIn float64 `json:"messages_in"`
	}
	if err := json.Unmarshal([]byte(run(t, dir, bin, "status", "--admin", adminAddr, "--json")), &js); err != nil ||
		!js.Ready || js.NodeID == "" || js.MessagesIn != 2 {
		t.Fatalf("arq status --json: %+v %v", js, err)
	}
	// Nothing listening: exit status 2.
	unreachable := exec.Command(bin, "status", "--admin", "127.0.0.1:1", "--timeout", "2s")
	if err := unreachable.Run(); err == nil || unreachable.ProcessState.ExitCode() != 2 {
		t.Fatalf("arq status of nothing: %v (exit %d), want exit 2", err, unreachable.ProcessState.ExitCode())
	}

	// SIGTERM drains and exits cleanly.
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}

	// A second serve reuses the secret.
	s2 := startServe(t, bin, dir)
	if !strings.Contains(strings.Join(s2.stdout, "\n"), "(reused") {
		t.Fatalf("second serve did not reuse the secret:\n%s", strings.Join(s2.stdout, "\n"))
	}
	_ = s2.cmd.Process.Signal(syscall.SIGTERM)
	_ = s2.cmd.Wait()
}

func TestServeRefusesInsecure(t *testing.T) {
	bin := buildArq(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "serve", "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to start insecurely") {
		t.Fatalf("serve on 0.0.0.0 without acknowledgement: err %v, output %s", err, out)
	}
	// The embedded NATS serves no TLS: loopback only, even with the
	// acknowledgement that a TLS terminator sits in front of the gateway.
	ack := filepath.Join(dir, "ack.toml")
	os.WriteFile(ack, []byte("[server]\ntls_terminated_upstream = true\n[auth]\nsecret_file = \"s\"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "s"), []byte(strings.Repeat("k", 40)), 0o600)
	cmd = exec.Command(bin, "serve", "--config", ack, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--embedded-nats-listen", "0.0.0.0:0")
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "embedded_listen 0.0.0.0:0 is not a loopback address") {
		t.Fatalf("embedded NATS on 0.0.0.0: err %v, output %s", err, out)
	}
	cfg := filepath.Join(dir, "bad.toml")
	os.WriteFile(cfg, []byte("[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"typo\"\n"), 0o600)
	cmd = exec.Command(bin, "serve", "--config", cfg)
	cmd.Dir = dir
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown keys: server.lisen") {
		t.Fatalf("unknown config key: err %v, output %s", err, out)
	}
}
