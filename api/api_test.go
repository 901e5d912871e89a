package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/api"
	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/brain"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/internal/spinetest"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/policy"
	"github.com/arqonbus/arqonbus/spine"
)

// The server API over real HTTP, driving real gateways on real sockets:
// two nodes on one NATS, WebSocket subscribers on both.

var secret = []byte("api-test-secret-0123456789abcdef0123456789")

const (
	adminKey = "admin-key-0123456789abcdef"
	acmeKey  = "acme-key-0123456789abcdef"
)

type cluster struct {
	url   string
	nodes []*gateway.Gateway
	ws    []string
	api   *httptest.Server
	reg   *prometheus.Registry
}

func startCluster(t testing.TB, pol *policy.Engine) *cluster {
	t.Helper()
	cl := &cluster{url: spinetest.NATS(t), reg: prometheus.NewRegistry()}
	nc, err := nats.Connect(cl.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := brain.New(brain.Config{Conn: nc, Store: brain.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	v, err := auth.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"node-a", "node-b"} {
		sp, err := spine.New(spine.Config{URL: cl.url, NodeID: id})
		if err != nil {
			t.Fatal(err)
		}
		g, err := gateway.New(gateway.Config{Listen: "127.0.0.1:0", NodeID: id, Verifier: v, Spine: sp, Policy: pol})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := g.Listen()
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Serve(ln); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_ = g.Shutdown(ctx)
			sp.Close()
		})
		cl.nodes = append(cl.nodes, g)
		cl.ws = append(cl.ws, "ws://"+ln.Addr().String()+gateway.SocketPath)
	}
	s, err := api.New(api.Config{Gateway: cl.nodes[0], Registerer: cl.reg, Keys: []api.Key{
		{Name: "admin", Secret: adminKey},
		{Name: "acme-backend", Secret: acmeKey, Tenant: "acme"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cl.api = httptest.NewServer(s)
	t.Cleanup(cl.api.Close)
	return cl
}

func dial(t testing.TB, url, tenant, user string) *client.Client {
	t.Helper()
	tok, err := auth.Mint(secret, auth.MintOptions{Tenant: tenant, User: user, TTL: time.Hour})
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

func subscribe(t testing.TB, c *client.Client, pattern string) *client.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Subscribe(ctx, pattern)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// call makes one API request and returns the status and decoded body.
func call(t *testing.T, cl *cluster, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, cl.api.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "apikey "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object", method, path, raw)
	}
	return resp.StatusCode, out
}

func expectMsg(t *testing.T, s *client.Subscription, data string) {
	t.Helper()
	select {
	case m := <-s.C:
		if string(m.Data) != data {
			t.Fatalf("got %q, want %q", m.Data, data)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no message %q", data)
	}
}

func expectNone(t *testing.T, subs ...*client.Subscription) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	for _, s := range subs {
		select {
		case m := <-s.C:
			t.Fatalf("unexpected message %q on %s", m.Data, m.Subject)
		default:
		}
	}
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestPublishReachesBothNodes(t *testing.T) {
	cl := startCluster(t, nil)
	sa := subscribe(t, dial(t, cl.ws[0], "acme", "a"), "orders.>")
	sb := subscribe(t, dial(t, cl.ws[1], "acme", "b"), "orders.>")
	other := subscribe(t, dial(t, cl.ws[1], "globex", "g"), "orders.>")

	code, body := call(t, cl, "POST", "/api/v1/publish", acmeKey, `{"tenant":"acme","subject":"orders.1.shipped","data":"shipped","headers":{"trace-id":"t1"}}`)
	if code != 200 {
		t.Fatalf("publish: %d %v", code, body)
	}
	expectMsg(t, sa, "shipped")
	expectMsg(t, sb, "shipped")

	// Binary data, through the admin key.
	code, body = call(t, cl, "POST", "/api/v1/publish", adminKey, `{"tenant":"acme","subject":"orders.2","data_b64":"AAEC"}`)
	if code != 200 {
		t.Fatalf("publish b64: %d %v", code, body)
	}
	for _, s := range []*client.Subscription{sa, sb} {
		select {
		case m := <-s.C:
			if string(m.Data) != "\x00\x01\x02" || m.Text {
				t.Fatalf("binary: %q text=%v", m.Data, m.Text)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no binary message")
		}
	}

	// Bad keys: 401, nothing published.
	for _, key := range []string{"", "wrong-key-0123456789abcdef", acmeKey + "x"} {
		code, body = call(t, cl, "POST", "/api/v1/publish", key, `{"tenant":"acme","subject":"orders.3","data":"no"}`)
		if code != 401 || errCode(body) != "AUTHENTICATION_FAILED" {
			t.Fatalf("key %q: %d %v", key, code, body)
		}
	}
	// A tenant-bound key cannot reach another tenant.
	code, body = call(t, cl, "POST", "/api/v1/publish", acmeKey, `{"tenant":"globex","subject":"orders.3","data":"no"}`)
	if code != 403 || errCode(body) != "AUTHORIZATION_DENIED" {
		t.Fatalf("cross-tenant: %d %v", code, body)
	}
	// Validation as for clients.
	for _, bad := range []string{
		`{"tenant":"acme","subject":"orders.*","data":"x"}`,
		`{"tenant":"acme","subject":"orders..x","data":"x"}`,
		`{"tenant":"acme","subject":"orders.x","data":"x","data_b64":"eA=="}`,
		`{"tenant":"acme","subject":"orders.x","data_b64":"!!"}`,
		`{"tenant":"acme","subject":"orders.x","bogus":1}`,
		`{"tenant":"acme","subject":"orders.x","data":"` + strings.Repeat("x", 1<<20+1) + `"}`,
		`{"tenant":"ac me","subject":"orders.x"}`,
		`not json`,
	} {
		code, body = call(t, cl, "POST", "/api/v1/publish", adminKey, bad)
		if code != 400 || errCode(body) != "VALIDATION_ERROR" {
			t.Fatalf("%.60s: %d %v", bad, code, body)
		}
	}
	expectNone(t, sa, sb, other)
	if n := testCounter(t, cl.reg, "arq_api_auth_failures_total"); n != 3 {
		t.Fatalf("auth failures counted: %v", n)
	}
}

func TestBroadcastAndBatch(t *testing.T) {
	cl := startCluster(t, nil)
	s1 := subscribe(t, dial(t, cl.ws[0], "acme", "a"), "user.alice.inbox")
	s2 := subscribe(t, dial(t, cl.ws[1], "acme", "b"), "user.bob.inbox")
	code, body := call(t, cl, "POST", "/api/v1/broadcast", acmeKey, `{"tenant":"acme","subjects":["user.alice.inbox","user.bob.inbox"],"data":"hi all"}`)
	if code != 200 || len(body["results"].([]any)) != 2 {
		t.Fatalf("broadcast: %d %v", code, body)
	}
	expectMsg(t, s1, "hi all")
	expectMsg(t, s2, "hi all")
	// A bad subject fails the whole broadcast before anything is sent.
	code, body = call(t, cl, "POST", "/api/v1/broadcast", acmeKey, `{"tenant":"acme","subjects":["user.alice.inbox","bad..subject"],"data":"no"}`)
	if code != 400 {
		t.Fatalf("bad broadcast: %d %v", code, body)
	}
	expectNone(t, s1, s2)

	code, body = call(t, cl, "POST", "/api/v1/batch", acmeKey, `{"commands":[
		{"method":"publish","params":{"tenant":"acme","subject":"user.alice.inbox","data":"one"}},
		{"method":"publish","params":{"tenant":"globex","subject":"user.alice.inbox","data":"not mine"}},
		{"method":"fly","params":{}},
		{"method":"publish","params":{"tenant":"acme","subject":"user.bob.inbox","data":"two"}}]}`)
	if code != 200 {
		t.Fatalf("batch: %d %v", code, body)
	}
	replies := body["replies"].([]any)
	wantErr := []string{"", "AUTHORIZATION_DENIED", "VALIDATION_ERROR", ""}
	for i, r := range replies {
		if got := errCode(r.(map[string]any)); got != wantErr[i] {
			t.Fatalf("reply %d: %v, want error %q", i, r, wantErr[i])
		}
	}
	expectMsg(t, s1, "one")
	expectMsg(t, s2, "two")
	expectNone(t, s1, s2)
}

func TestDisconnect(t *testing.T) {
	cl := startCluster(t, nil)
	bob1 := dial(t, cl.ws[0], "acme", "bob")
	bob2 := dial(t, cl.ws[1], "acme", "bob")
	bob3 := dial(t, cl.ws[0], "acme", "bob")
	carol := dial(t, cl.ws[0], "acme", "carol")
	globexBob := dial(t, cl.ws[0], "globex", "bob")

	// One session.
	code, body := call(t, cl, "POST", "/api/v1/disconnect", acmeKey,
		`{"tenant":"acme","user":"bob","session":"`+bob3.Welcome().SessionId+`","code":4001,"reason":"moved"}`)
	if code != 200 {
		t.Fatalf("disconnect session: %d %v", code, body)
	}
	expectClosed(t, bob3, 4001, "moved")
	// Every session of a user, on both nodes.
	code, body = call(t, cl, "POST", "/api/v1/disconnect", acmeKey, `{"tenant":"acme","user":"bob","code":4000,"reason":"banned"}`)
	if code != 200 || body["disconnected_here"].(float64) != 1 {
		t.Fatalf("disconnect user: %d %v", code, body)
	}
	expectClosed(t, bob1, 4000, "banned")
	expectClosed(t, bob2, 4000, "banned")
	for _, c := range []*client.Client{carol, globexBob} {
		if err := c.Ping(context.Background()); err != nil {
			t.Fatalf("an unnamed session was closed: %v", err)
		}
	}
	code, body = call(t, cl, "POST", "/api/v1/disconnect", acmeKey, `{"tenant":"acme","user":"carol","code":1001}`)
	if code != 400 {
		t.Fatalf("code 1001: %d %v", code, body)
	}
}

func expectClosed(t *testing.T, c *client.Client, code int, reason string) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session not closed")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || ce.Code != code || ce.Reason != reason {
		t.Fatalf("closed with %v, want %d %q", c.Err(), code, reason)
	}
}

func TestPresenceAndInfo(t *testing.T) {
	cl := startCluster(t, nil)
	a := dial(t, cl.ws[0], "acme", "alice")
	b := dial(t, cl.ws[1], "acme", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []*client.Client{a, b} {
		if _, err := c.SubscribePresence(ctx, "room.1", []byte(`{"x":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	for {
		code, body := call(t, cl, "GET", "/api/v1/presence?tenant=acme&subject=room.1", acmeKey, "")
		if code != 200 {
			t.Fatalf("presence: %d %v", code, body)
		}
		if body["count"].(float64) == 2 {
			if ms := body["members"].([]any); len(ms) != 2 || body["users"].(float64) != 2 {
				t.Fatalf("presence: %v", body)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("presence never showed both members: %v", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, body := call(t, cl, "GET", "/api/v1/presence?tenant=acme&subject=room.1&count_only=true", acmeKey, "")
	if code != 200 || body["members"] != nil || body["count"].(float64) != 2 {
		t.Fatalf("count_only: %d %v", code, body)
	}
	code, body = call(t, cl, "GET", "/api/v1/presence?tenant=acme&subject=room.*", acmeKey, "")
	if code != 400 {
		t.Fatalf("wildcard presence: %d %v", code, body)
	}
	dial(t, cl.ws[1], "globex", "gus")
	code, body = call(t, cl, "GET", "/api/v1/info", adminKey, "")
	nodes, _ := body["nodes"].([]any)
	if code != 200 || len(nodes) != 2 || body["connections"].(float64) != 3 || nodes[0].(map[string]any)["node"] != "node-a" {
		t.Fatalf("info: %d %v", code, body)
	}
	code, body = call(t, cl, "GET", "/api/v1/info", acmeKey, "")
	if code != 200 || body["connections"].(float64) != 2 {
		t.Fatalf("info for a tenant key: %d %v", code, body)
	}
	for _, n := range body["nodes"].([]any) {
		for _, tn := range n.(map[string]any)["tenants"].([]any) {
			if tn.(map[string]any)["tenant"] != "acme" {
				t.Fatalf("a tenant key sees %v", tn)
			}
		}
	}
}

// TestPolicyAppliesToAPI: the tenant's Wasm PUBLISH policy decides API
// publishes too.
func TestPolicyAppliesToAPI(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../policies/30-malware.wasm")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "tenants", "acme", "30-malware.wasm")
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, src, 0o644); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(context.Background(), policy.Config{Dir: dir, ReloadInterval: -1, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close(context.Background()) })
	cl := startCluster(t, eng)
	s := subscribe(t, dial(t, cl.ws[1], "acme", "b"), "chat.>")
	code, body := call(t, cl, "POST", "/api/v1/publish", acmeKey, `{"tenant":"acme","subject":"chat.x","data":"free malware here"}`)
	if code != 403 || errCode(body) != "POLICY_BLOCKED" {
		t.Fatalf("malware: %d %v", code, body)
	}
	code, body = call(t, cl, "POST", "/api/v1/publish", acmeKey, `{"tenant":"acme","subject":"chat.x","data":"clean"}`)
	if code != 200 {
		t.Fatalf("clean: %d %v", code, body)
	}
	expectMsg(t, s, "clean")
	expectNone(t, s)
}

func testCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

func startClusterB(b *testing.B) *cluster { return startCluster(b, nil) }

func subscribeB(b *testing.B, cl *cluster, pattern string) *client.Subscription {
	return subscribe(b, dial(b, cl.ws[1], "acme", "bench"), pattern)
}

// TestNATSPublish: a backend that speaks NATS publishes with a request to
// "<prefix>.$api.<tenant>.publish"; the tenant is the subject's.
func TestNATSPublish(t *testing.T) {
	cl := startCluster(t, nil)
	sub, err := api.ServeNATS(cl.nodes[0].SpineConn(), "arq", cl.nodes[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	s := subscribe(t, dial(t, cl.ws[1], "acme", "b"), "orders.>")
	other := subscribe(t, dial(t, cl.ws[1], "globex", "g"), "orders.>")
	nc, err := nats.Connect(cl.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ask := func(tenant string, p *pb.ApiPublish) *pb.ApiReply {
		data, _ := p.MarshalVT()
		m, err := nc.Request("arq.$api."+tenant+".publish", data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r pb.ApiReply
		if err := r.UnmarshalVT(m.Data); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	if r := ask("acme", &pb.ApiPublish{Subject: "orders.1", Data: []byte("over nats"), Text: true}); r.Code != 0 {
		t.Fatalf("publish: %v", r)
	}
	expectMsg(t, s, "over nats")
	r := ask("acme", &pb.ApiPublish{Subjects: []string{"orders.2", "orders.3"}, Data: []byte("both")})
	if len(r.Results) != 2 || r.Results[0].Code != 0 || r.Results[1].Code != 0 {
		t.Fatalf("broadcast: %v", r)
	}
	expectMsg(t, s, "both")
	expectMsg(t, s, "both")
	if r := ask("acme", &pb.ApiPublish{Subject: "orders.*", Data: []byte("x")}); r.Code != pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR {
		t.Fatalf("wildcard: %v", r)
	}
	expectNone(t, s, other)

	// Presence and disconnect over NATS.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	member := dial(t, cl.ws[1], "acme", "mia")
	if _, err := member.SubscribePresence(ctx, "room.9", nil); err != nil {
		t.Fatal(err)
	}
	for {
		data, _ := (&pb.PresenceQuery{Subject: "room.9"}).MarshalVT()
		m, err := nc.Request("arq.$api.acme.presence", data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ans pb.PresenceAnswer
		if err := ans.UnmarshalVT(m.Data); err != nil || ans.Code != 0 {
			t.Fatalf("presence over NATS: %v %v", err, &ans)
		}
		if ans.Count == 1 && len(ans.Members) == 1 && ans.Members[0].User == "mia" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("presence over NATS never showed mia: %v", &ans)
		}
		time.Sleep(50 * time.Millisecond)
	}
	data, _ := (&pb.DisconnectCommand{User: "mia", Code: 4002, Reason: "bye"}).MarshalVT()
	m, err := nc.Request("arq.$api.acme.disconnect", data, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var dr pb.ApiReply
	if err := dr.UnmarshalVT(m.Data); err != nil || dr.Code != 0 {
		t.Fatalf("disconnect over NATS: %v %v", err, &dr)
	}
	expectClosed(t, member, 4002, "bye")

	// Info over NATS: JSON, the tenant's view.
	im, err := nc.Request("arq.$api.acme.info", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Nodes       []map[string]any `json:"nodes"`
		Connections int              `json:"connections"`
	}
	if err := json.Unmarshal(im.Data, &info); err != nil || len(info.Nodes) != 2 || info.Connections != 1 {
		t.Fatalf("info over NATS: %v %s", err, im.Data)
	}
}
