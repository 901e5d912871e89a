package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	sizeCap = examples + "/10-size-cap.wasm"
	acl     = examples + "/20-acl.wasm"
	malware = examples + "/30-malware.wasm"
)

// want is an expected decision: allow, or deny with code (and message if set).
type want struct {
	allow   bool
	code    string
	message string
	policy  string
}

func check(t *testing.T, name string, got Decision, w want) {
	t.Helper()
	if got.Allow != w.allow || (!w.allow && got.Code != w.code) ||
		(w.message != "" && got.Message != w.message) || (w.policy != "" && got.Policy != w.policy) {
		t.Errorf("%s: got %+v, want %+v", name, got, w)
	}
}

// withWord returns a copy of p with word written at offset i.
func withWord(p []byte, i int, word string) []byte {
	q := bytes.Clone(p)
	copy(q[i:], word)
	return q
}

func TestMalwarePolicy(t *testing.T) {
	e := newEngine(t, policyDir(t, map[string]string{"30-malware.wasm": malware}), nil)
	ctx := context.Background()
	blocked := want{code: "POLICY_BLOCKED", message: "payload contains the word malware", policy: "30-malware.wasm"}
	cases := []struct {
		name    string
		payload []byte
		want    want
	}{
		{"empty", nil, want{allow: true}},
		{"short", []byte("malwar"), want{allow: true}},
		{"exact", []byte("malware"), blocked},
		{"upper", []byte("MALWARE"), blocked},
		{"mixed", []byte("this is MalWare!"), blocked},
		{"near miss", []byte("malwore malwar alware malwar e"), want{allow: true}},
		{"non-letters that fold", []byte("\x0d\x01\x0c\x17\x01\x12\x05 M@LWARE"), want{allow: true}},
		{"1KiB clean", text1K, want{allow: true}},
		{"1KiB at start", withWord(text1K, 0, "malware"), blocked},
		{"1KiB at end", withWord(text1K, 1024-7, "malware"), blocked},
		{"1KiB truncated at end", withWord(text1K, 1024-6, "malwar"), want{allow: true}},
		{"binary", bytes.Repeat([]byte{0xff, 0x00, 'm', 'E'}, 300), want{allow: true}},
	}
	for _, c := range cases {
		check(t, c.name, e.Decide(ctx, publish("t", "user", "chat.x", c.payload)), c.want)
	}
	// Every position of a 1 KiB payload, and of payloads of every length up to
	// 200, exercises the SIMD blocks and their edges.
	for i := 0; i <= len(text1K)-7; i++ {
		d := e.Decide(ctx, publish("t", "user", "chat.x", withWord(text1K, i, "mAlwarE")))
		if d.Allow {
			t.Fatalf("malware at offset %d allowed", i)
		}
	}
	for n := 7; n <= 200; n++ {
		p := withWord(text1K[:n], n-7, "malware")
		if d := e.Decide(ctx, publish("t", "user", "chat.x", p)); d.Allow {
			t.Fatalf("malware at the end of %d bytes allowed", n)
		}
		if d := e.Decide(ctx, publish("t", "user", "chat.x", p[:n-1])); !d.Allow {
			t.Fatalf("truncated malware at the end of %d bytes denied: %+v", n-1, d)
		}
	}
	// Only PUBLISH is covered: subscribing to anything is left to the default.
	check(t, "subscribe", e.Decide(ctx, subscribe("t", "user", "malware")), want{allow: true})
	if !e.NeedsPayload("t") || !e.HasPolicies("t") || e.HasPoliciesFor("t", pb.PolicyAction_POLICY_ACTION_CONNECT) {
		t.Error("malware policy: want NeedsPayload, HasPolicies, and no CONNECT chain")
	}
}

func TestACLPolicy(t *testing.T) {
	e := newEngine(t, policyDir(t, map[string]string{"20-acl.wasm": acl}), nil)
	ctx := context.Background()
	noPub := want{code: "AUTHORIZATION_DENIED", message: "role reader may not publish", policy: "20-acl.wasm"}
	admin := want{code: "AUTHORIZATION_DENIED", message: "subjects under admin. need role admin"}
	ok := want{allow: true}
	cases := []struct {
		name string
		req  *pb.PolicyRequest
		want want
	}{
		{"reader publishes", publish("t", "reader", "chat.x", []byte("hi")), noPub},
		{"reader subscribes", subscribe("t", "reader", "chat.x"), ok},
		{"user publishes", publish("t", "user", "chat.x", nil), ok},
		{"readers publishes", publish("t", "readers", "chat.x", nil), ok},
		{"reade publishes", publish("t", "reade", "chat.x", nil), ok},
		{"user subscribes admin.x", subscribe("t", "user", "admin.x"), admin},
		{"user publishes admin.x", publish("t", "user", "admin.x.y", nil), admin},
		{"user subscribes admin", subscribe("t", "user", "admin"), admin},
		{"user subscribes *", subscribe("t", "user", "*"), admin},
		{"user subscribes *.x", subscribe("t", "user", "*.x"), admin},
		{"user subscribes >", subscribe("t", "user", ">"), admin},
		{"user subscribes administrator.x", subscribe("t", "user", "administrator.x"), ok},
		{"user subscribes adminx", subscribe("t", "user", "adminx"), ok},
		{"user subscribes chat.*", subscribe("t", "user", "chat.*"), ok},
		{"user subscribes chat.>", subscribe("t", "user", "chat.>"), ok},
		{"user subscribes x.admin.y", subscribe("t", "user", "x.admin.y"), ok},
		{"user subscribes empty", subscribe("t", "user", ""), ok},
		{"admin subscribes admin.x", subscribe("t", "admin", "admin.x"), ok},
		{"admin subscribes >", subscribe("t", "admin", ">"), ok},
		{"admin publishes admin.x", publish("t", "admin", "admin.x", []byte("x")), ok},
		{"admins subscribes admin.x", subscribe("t", "admins", "admin.x"), admin},
		{"Admin subscribes admin.x", subscribe("t", "Admin", "admin.x"), admin},
		{"reader publishes admin.x", publish("t", "reader", "admin.x", nil), noPub},
		{"connect", connect("t", "reader"), ok},
	}
	for _, c := range cases {
		check(t, c.name, e.Decide(ctx, c.req), c.want)
	}
	if e.NeedsPayload("t") {
		t.Error("ACL policy: NeedsPayload = true")
	}
}

func TestSizeCapPolicy(t *testing.T) {
	e := newEngine(t, policyDir(t, map[string]string{"10-size-cap.wasm": sizeCap}), nil)
	ctx := context.Background()
	tooBig := want{code: "LIMIT_EXCEEDED", message: "payload exceeds 65536 bytes", policy: "10-size-cap.wasm"}
	sized := func(payload []byte, size uint32) *pb.PolicyRequest {
		r := publish("t", "user", "chat.x", payload)
		r.PayloadSize = size
		return r
	}
	cases := []struct {
		name string
		req  *pb.PolicyRequest
		want want
	}{
		{"empty", sized(nil, 0), want{allow: true}},
		{"1KiB", sized(text1K, 1024), want{allow: true}},
		{"size only, at cap", sized(nil, 65536), want{allow: true}},
		{"size only, over cap", sized(nil, 65537), tooBig},
		{"size only, huge", sized(nil, 1<<31), tooBig},
		// The payload is not passed to this policy (it does not read it), but
		// its length still counts when payload_size is unset or smaller.
		{"payload over cap, size unset", sized(make([]byte, 70000), 0), tooBig},
		{"payload over cap, size small", sized(make([]byte, 70000), 10), tooBig},
		// 2 MiB would not fit in the 1 MiB memory if it were copied.
		{"2MiB payload", sized(make([]byte, 2<<20), 2<<20), tooBig},
	}
	for _, c := range cases {
		check(t, c.name, e.Decide(ctx, c.req), c.want)
	}
	if e.NeedsPayload("t") {
		t.Error("size cap: NeedsPayload = true")
	}
}

func TestChainOrderAndTenants(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"10-size-cap.wasm":             sizeCap,
		"20-acl.wasm":                  acl,
		"tenants/acme/30-malware.wasm": malware,
		"tenants/acme/40-logdeny.wasm": "testdata/logdeny.wasm",
		"tenants/.hidden/x.wasm":       "testdata/garbage.wasm",
		"tenants/beta/.ignored.wasm":   "testdata/garbage.wasm",
		"tenants/beta/notes.txt":       "testdata/garbage.wasm",
		"README.md.wasm.bak":           "testdata/garbage.wasm",
	})
	e := newEngine(t, dir, nil)
	ctx := context.Background()

	// Global chain: size cap, then ACL; first deny wins.
	big := publish("other", "reader", "chat.x", make([]byte, 70000))
	check(t, "size cap before ACL", e.Decide(ctx, big), want{code: "LIMIT_EXCEEDED", policy: "10-size-cap.wasm"})
	check(t, "ACL", e.Decide(ctx, publish("other", "reader", "chat.x", nil)), want{code: "AUTHORIZATION_DENIED"})
	check(t, "no malware policy for other tenants", e.Decide(ctx, publish("other", "user", "chat.x", []byte("malware"))), want{allow: true})

	// acme: the global chain, then its own.
	check(t, "acme malware", e.Decide(ctx, publish("acme", "user", "chat.x", []byte("malware"))), want{code: "POLICY_BLOCKED", policy: "tenants/acme/30-malware.wasm"})
	check(t, "acme ACL first", e.Decide(ctx, publish("acme", "reader", "chat.x", []byte("malware"))), want{code: "AUTHORIZATION_DENIED"})
	check(t, "acme logdeny last", e.Decide(ctx, publish("acme", "user", "chat.x", nil)),
		want{code: "POLICY_BLOCKED", message: "go away", policy: "tenants/acme/40-logdeny.wasm"})
	check(t, "acme connect: logdeny covers every action", e.Decide(ctx, connect("acme", "user")), want{code: "POLICY_BLOCKED", message: "go away"})
	check(t, "other connect: default", e.Decide(ctx, connect("other", "user")), want{allow: true})

	if !e.NeedsPayload("acme") || e.NeedsPayload("other") || e.NeedsPayload("beta") {
		t.Error("NeedsPayload: want acme only")
	}
	if !e.HasPoliciesFor("acme", pb.PolicyAction_POLICY_ACTION_CONNECT) || e.HasPoliciesFor("other", pb.PolicyAction_POLICY_ACTION_CONNECT) {
		t.Error("HasPoliciesFor CONNECT: want acme only")
	}
	if !e.HasPolicies("other") || !e.HasPoliciesFor("other", pb.PolicyAction_POLICY_ACTION_SUBSCRIBE) {
		t.Error("HasPolicies: global policies apply to every tenant")
	}
	var names []string
	for _, p := range e.Policies() {
		names = append(names, p.Name)
	}
	wantNames := "10-size-cap.wasm 20-acl.wasm tenants/acme/30-malware.wasm tenants/acme/40-logdeny.wasm"
	if got := strings.Join(names, " "); got != wantNames {
		t.Errorf("Policies = %s, want %s", got, wantNames)
	}
}

func TestDefaultAction(t *testing.T) {
	ctx := context.Background()
	allowAll := newEngine(t, "", nil)
	denyAll := newEngine(t, "", func(c *Config) { c.Default = DenyAll })
	for _, req := range []*pb.PolicyRequest{connect("t", "user"), subscribe("t", "user", "x"), publish("t", "user", "x", text1K)} {
		check(t, "allow-all", allowAll.Decide(ctx, req), want{allow: true})
		check(t, "deny-all", denyAll.Decide(ctx, req), want{code: "POLICY_BLOCKED"})
	}
	if allowAll.HasPolicies("t") || allowAll.NeedsPayload("t") {
		t.Error("no policies: HasPolicies or NeedsPayload true")
	}
	if got := testutil.ToFloat64(denyAll.met.decisions[outcomeDefaultDeny]); got != 3 {
		t.Errorf("default_deny = %v, want 3", got)
	}
	// DenyAll applies per action: a tenant whose policies cover only PUBLISH
	// is denied CONNECT.
	e := newEngine(t, policyDir(t, map[string]string{"m.wasm": malware}), func(c *Config) { c.Default = DenyAll })
	check(t, "deny-all connect", e.Decide(ctx, connect("t", "user")), want{code: "POLICY_BLOCKED"})
	check(t, "deny-all publish covered", e.Decide(ctx, publish("t", "user", "x", nil)), want{allow: true})
	if AllowAll.String() != "allow-all" || DenyAll.String() != "deny-all" {
		t.Error("DefaultAction.String")
	}
	for s, w := range map[string]DefaultAction{"": AllowAll, "allow": AllowAll, "Deny": DenyAll, "deny-all": DenyAll} {
		if got, err := ParseDefaultAction(s); err != nil || got != w {
			t.Errorf("ParseDefaultAction(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseDefaultAction("maybe"); err == nil {
		t.Error(`ParseDefaultAction("maybe"): no error`)
	}
}

func TestBadRequestCanceledClosed(t *testing.T) {
	e := newEngine(t, policyDir(t, map[string]string{"a.wasm": "testdata/allow.wasm"}), nil)
	d := e.Decide(context.Background(), &pb.PolicyRequest{Tenant: "t"})
	check(t, "unspecified action", d, want{code: CodePolicyError})
	if d.Reason != "bad_request" {
		t.Errorf("reason %q, want bad_request", d.Reason)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d := e.Decide(ctx, connect("t", "u")); d.Allow || d.Reason != "canceled" {
		t.Errorf("canceled ctx: %+v", d)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(context.Background(), connect("t", "u")); d.Allow || d.Reason != "closed" {
		t.Errorf("after Close: %+v", d)
	}
	if err := e.Reload(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reload after Close: %v", err)
	}
	if e.HasPolicies("t") || e.NeedsPayload("t") {
		t.Error("after Close: HasPolicies or NeedsPayload true")
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer for log capture.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestGuestLog(t *testing.T) {
	var buf syncBuffer
	e := newEngine(t, policyDir(t, map[string]string{"l.wasm": "testdata/logdeny.wasm"}), func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	})
	for range 50 {
		check(t, "logdeny", e.Decide(context.Background(), connect("t", "u")), want{code: "POLICY_BLOCKED", message: "go away", policy: "l.wasm"})
	}
	if !strings.Contains(buf.String(), `msg="policy log" policy=l.wasm msg="hello from logdeny"`) {
		t.Errorf("log output lacks the guest line:\n%s", buf.String())
	}
	// 50 lines in well under a second: the rate limit drops most.
	if n := strings.Count(buf.String(), "hello from logdeny"); n > 2*maxLinesPerSecond {
		t.Errorf("%d guest log lines, want at most %d", n, 2*maxLinesPerSecond)
	}
	if testutil.ToFloat64(e.met.logDropped) == 0 {
		t.Error("no dropped log lines counted")
	}
}

func TestDecisionErrorCode(t *testing.T) {
	cases := []struct {
		d    Decision
		want pb.ErrorCode
	}{
		{Decision{Allow: true}, pb.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{Decision{Code: "POLICY_BLOCKED"}, pb.ErrorCode_ERROR_CODE_POLICY_BLOCKED},
		{Decision{Code: "AUTHORIZATION_DENIED"}, pb.ErrorCode_ERROR_CODE_AUTHORIZATION_DENIED},
		{Decision{Code: "RATE_LIMIT_EXCEEDED"}, pb.ErrorCode_ERROR_CODE_RATE_LIMIT_EXCEEDED},
		{Decision{Code: CodePolicyError}, pb.ErrorCode_ERROR_CODE_POLICY_BLOCKED},
		{Decision{Code: "NOT_A_CODE"}, pb.ErrorCode_ERROR_CODE_POLICY_BLOCKED},
	}
	for _, c := range cases {
		if got := c.d.ErrorCode(); got != c.want {
			t.Errorf("%+v.ErrorCode() = %v, want %v", c.d, got, c.want)
		}
	}
}

func TestMetricsAndCacheDir(t *testing.T) {
	reg := prometheus.NewRegistry()
	cache := t.TempDir()
	dir := policyDir(t, map[string]string{"m.wasm": malware})
	cfg := Config{Dir: dir, ReloadInterval: -1, Registerer: reg, CacheDir: cache, Logger: quietLogger()}
	e, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A second engine on the same registry is refused.
	if _, err := New(context.Background(), cfg); err == nil {
		t.Error("second engine on one registry: no error")
	}
	e.Decide(context.Background(), publish("t", "u", "x", []byte("malware")))
	n, err := testutil.GatherAndCount(reg, "arqon_policy_decisions_total", "arqon_policy_fail_closed_total",
		"arqon_policy_reload_errors_total", "arqon_policy_modules")
	if err != nil {
		t.Fatal(err)
	}
	if n < 5+int(numReasons)-1+2 {
		t.Errorf("%d series, want every outcome and reason pre-created", n)
	}
	if entries, _ := os.ReadDir(cache); len(entries) == 0 {
		t.Error("compilation cache dir is empty")
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close unregisters: a new engine can take the registry, and starts
	// faster from the on-disk cache.
	e, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(context.Background(), publish("t", "u", "x", []byte("malware"))); d.Allow {
		t.Error("cached module allowed malware")
	}
	_ = e.Close(context.Background())
}

func TestNewErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Config{Dir: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("missing dir: no error")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, Config{Dir: f}); err == nil {
		t.Error("dir is a file: no error")
	}
}
