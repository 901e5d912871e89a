package policy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/pb"
)

// examples is the directory of the example policies.
const examples = "../policies"

// quietLogger discards log output unless -v is set.
func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// copyFile copies src to dst, creating dst's directory.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, b)
}

// writeFile writes b to dst atomically (temp file + rename), creating dst's
// directory.
func writeFile(t testing.TB, dst string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// policyDir makes a temp policy dir with files: relative dst path -> src path.
func policyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for dst, src := range files {
		copyFile(t, src, filepath.Join(dir, filepath.FromSlash(dst)))
	}
	return dir
}

// newEngine starts an engine on dir with test-friendly defaults (a generous
// time budget, since the budget is wall-clock time and a loaded CI machine
// under -race can deschedule a clean call for a long time; no polling) and
// closes it at the end of the test.
func newEngine(t testing.TB, dir string, mod func(*Config)) *Engine {
	t.Helper()
	cfg := Config{Dir: dir, Timeout: 10 * time.Second, ReloadInterval: -1, PoolSize: 4, Logger: quietLogger()}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// publish builds a PUBLISH request.
func publish(tenant, role, subject string, payload []byte) *pb.PolicyRequest {
	return &pb.PolicyRequest{
		Action: pb.PolicyAction_POLICY_ACTION_PUBLISH, Tenant: tenant, User: "u1", Role: role,
		Subject: subject, Payload: payload, PayloadSize: uint32(len(payload)),
		Capabilities: []string{"pub", "sub"},
		Headers:      []*pb.Header{{Key: "content-type", Value: "text/plain"}},
	}
}

// subscribe builds a SUBSCRIBE request.
func subscribe(tenant, role, subject string) *pb.PolicyRequest {
	return &pb.PolicyRequest{Action: pb.PolicyAction_POLICY_ACTION_SUBSCRIBE, Tenant: tenant, User: "u1", Role: role, Subject: subject}
}

// connect builds a CONNECT request.
func connect(tenant, role string) *pb.PolicyRequest {
	return &pb.PolicyRequest{Action: pb.PolicyAction_POLICY_ACTION_CONNECT, Tenant: tenant, User: "u1", Role: role}
}

// text1K is a 1 KiB printable payload without "malware".
var text1K = []byte(strings.Repeat("the quick brown fox jumps over the lazy dog, ", 24)[:1024])
