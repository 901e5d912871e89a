package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fastjson"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/brain"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/spine"
)

// startPresenceNode runs a node with an in-process spine and a memory brain.
func startPresenceNode(t *testing.T, mod func(*Config)) *testNode {
	t.Helper()
	id := fmt.Sprintf("node-caps-%d", time.Now().UnixNano())
	sp, err := spine.New(spine.Config{NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	nc, err := sp.NewConn("brain-" + id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := brain.New(brain.Config{Conn: nc, Prefix: sp.Prefix(), Store: brain.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(); nc.Close() })
	return startNode(t, sp, func(c *Config) {
		c.NodeID = id
		c.Presence.QueryTimeout = 2 * time.Second
		if mod != nil {
			mod(c)
		}
	})
}

// dialCaps connects as user with a token carrying caps (nil: no claim).
func dialCaps(t *testing.T, n *testNode, user string, caps []string) *client.Client {
	t.Helper()
	tok, err := auth.Mint(testSecret, auth.MintOptions{Tenant: "acme", User: user, Capabilities: caps, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx(t), client.Options{URL: n.url, Token: tok})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != "AUTHORIZATION_DENIED" {
		t.Errorf("%s: %v, want AUTHORIZATION_DENIED", what, err)
	}
}

func denies(t *testing.T, n *testNode, action string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "arq_capability_denies_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "action" && l.GetValue() == action {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Capability denials for sub, pub and presence through a real gateway.
func TestCapabilitiesEnforced(t *testing.T) {
	n := startPresenceNode(t, nil)
	caps := []string{"sub:chat.>", "pub:chat.*.msg", "sub:room.*", "presence:room.*", "billing"}
	c := dialCaps(t, n, "alice", caps)
	all := dialCaps(t, n, "watcher", nil) // no claim: the whole tenant, as before
	everything, err := all.Subscribe(ctx(t), ">")
	if err != nil {
		t.Fatal(err)
	}

	// Subscriptions: covered patterns only.
	chat, err := c.Subscribe(ctx(t), "chat.>")
	if err != nil {
		t.Fatalf("sub chat.>: %v", err)
	}
	if _, err := c.Subscribe(ctx(t), "chat.*.msg"); err != nil {
		t.Fatalf("sub chat.*.msg: %v", err)
	}
	for _, p := range []string{">", "orders.>", "chat", "*.lobby", "room.>"} {
		_, err := c.Subscribe(ctx(t), p)
		wantDenied(t, "sub "+p, err)
	}
	if got := denies(t, n, "sub"); got != 5 {
		t.Errorf("sub denies %v, want 5", got)
	}

	// Publishes: denied ones reach nobody.
	for _, s := range []string{"chat.1.other", "orders.1", "chat.1"} {
		wantDenied(t, "pub "+s, c.PublishAck(ctx(t), s, []byte("no"), client.PublishOptions{Text: true}))
	}
	if err := c.PublishAck(ctx(t), "chat.1.msg", []byte("yes"), client.PublishOptions{Text: true}); err != nil {
		t.Fatalf("pub chat.1.msg: %v", err)
	}
	if m := recv(t, chat); m.Subject != "chat.1.msg" || string(m.Data) != "yes" {
		t.Fatalf("got %s %q", m.Subject, m.Data)
	}
	if m := recv(t, everything); m.Subject != "chat.1.msg" {
		t.Fatalf("the tenant-wide subscriber got %s first", m.Subject)
	}
	if got := denies(t, n, "pub"); got != 3 {
		t.Errorf("pub denies %v, want 3", got)
	}

	// Presence: a join needs sub: and presence:; a query presence:.
	room, err := c.SubscribePresence(ctx(t), "room.1", nil)
	if err != nil {
		t.Fatalf("presence room.1: %v", err)
	}
	select {
	case ev := <-room.Presence:
		if ev.Member.User != "alice" {
			t.Fatalf("join of %s", ev.Member.User)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no own join")
	}
	_, err = c.SubscribePresence(ctx(t), "chat.x", nil) // sub: covers it, presence: does not
	wantDenied(t, "presence chat.x", err)
	if a, err := c.Presence(ctx(t), "room.1", client.PresenceOptions{}); err != nil || a.Count != 1 {
		t.Fatalf("query room.1: %+v %v", a, err)
	}
	_, err = c.Presence(ctx(t), "chat.x", client.PresenceOptions{})
	wantDenied(t, "query chat.x", err)
	if denies(t, n, "presence") != 1 || denies(t, n, "presence_query") != 1 {
		t.Errorf("presence denies %v, queries %v", denies(t, n, "presence"), denies(t, n, "presence_query"))
	}
	// presence: without sub: does not make a member.
	p := dialCaps(t, n, "paul", []string{"presence:room.*"})
	_, err = p.SubscribePresence(ctx(t), "room.1", nil)
	wantDenied(t, "presence without sub", err)
	if _, err := p.Presence(ctx(t), "room.1", client.PresenceOptions{CountOnly: true}); err != nil {
		t.Fatalf("query with presence: only: %v", err)
	}

	// An empty claim grants nothing; the connection stays usable.
	e := dialCaps(t, n, "eve", []string{})
	_, err = e.Subscribe(ctx(t), "chat.x")
	wantDenied(t, "empty claim sub", err)
	if err := e.Ping(ctx(t)); err != nil {
		t.Fatalf("ping after denials: %v", err)
	}
	if got := counterValue(t, n, "arq_error_frames_total"); got < 12 {
		t.Errorf("error frames %v", got)
	}
}

// require_capabilities: no claim grants nothing; a claim that does not
// compile is refused at the upgrade.
func TestRequireCapabilities(t *testing.T) {
	n := startNode(t, nil, func(c *Config) { c.RequireCapabilities = true })
	c := dialCaps(t, n, "u", nil)
	_, err := c.Subscribe(ctx(t), "chat.x")
	wantDenied(t, "sub without claim", err)
	wantDenied(t, "pub without claim", c.PublishAck(ctx(t), "chat.x", []byte("x"), client.PublishOptions{}))
	ok := dialCaps(t, n, "v", []string{"sub:chat.*", "pub:chat.*"})
	s, err := ok.Subscribe(ctx(t), "chat.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := ok.PublishAck(ctx(t), "chat.x", []byte("x"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	recv(t, s)

	tok, _ := auth.Mint(testSecret, auth.MintOptions{Tenant: "acme", User: "u", Capabilities: []string{"sub:a..b"}})
	_, err = client.Dial(ctx(t), client.Options{URL: n.url, Token: tok})
	if !errors.Is(err, client.ErrUnauthorized) || !strings.Contains(err.Error(), "invalid capabilities") {
		t.Fatalf("bad capability: %v", err)
	}
}

// Personal subjects: user.<sub>.> is readable by <sub> only, unless a
// capability naming the prefix grants it; anyone may publish there.
func TestPersonalSubjects(t *testing.T) {
	n := startPresenceNode(t, func(c *Config) { c.PersonalPrefix = "user" })
	alice := dialCaps(t, n, "alice", nil)
	bob := dialCaps(t, n, "bob", nil)
	inbox, err := alice.Subscribe(ctx(t), "user.alice.>")
	if err != nil {
		t.Fatalf("own personal subjects: %v", err)
	}
	for _, p := range []string{"user.bob.>", "user.*.inbox", "user.>", ">", "*.bob.x"} {
		_, err := alice.Subscribe(ctx(t), p)
		wantDenied(t, "alice sub "+p, err)
	}
	_, err = alice.SubscribePresence(ctx(t), "user.bob.room", nil)
	wantDenied(t, "presence in bob's room", err)
	_, err = alice.Presence(ctx(t), "user.bob.room", client.PresenceOptions{})
	wantDenied(t, "query of bob's room", err)
	if _, err := alice.Subscribe(ctx(t), "user.*"); err != nil { // two tokens: nobody's personal space
		t.Fatalf("user.*: %v", err)
	}
	if err := bob.PublishAck(ctx(t), "user.alice.inbox", []byte("hi"), client.PublishOptions{Text: true}); err != nil {
		t.Fatalf("bob to alice: %v", err)
	}
	if m := recv(t, inbox); m.Subject != "user.alice.inbox" {
		t.Fatalf("got %s", m.Subject)
	}
	// An explicit grant.
	agent := dialCaps(t, n, "agent", []string{"sub:user.*.inbox", "sub:>"})
	if _, err := agent.Subscribe(ctx(t), "user.*.inbox"); err != nil {
		t.Fatalf("agent: %v", err)
	}
	_, err = agent.Subscribe(ctx(t), ">") // sub:> is not a grant of personal subjects
	wantDenied(t, "agent >", err)
	if got := denies(t, n, "personal"); got != 8 {
		t.Errorf("personal denies %v, want 8", got)
	}
}

func TestReachesOthers(t *testing.T) {
	for _, c := range []struct {
		p    string
		want bool
	}{
		{">", true}, {"user.>", true}, {"*.>", true}, {"*.*.*", true}, {"user.*.x", true},
		{"user.bob.x", true}, {"user.bob.>", true}, {"*.bob.x", true},
		{"user.alice.x", false}, {"user.alice.>", false}, {"*.alice.*", false},
		{"user", false}, {"user.bob", false}, {"user.*", false}, {"*.*", false}, {"chat.>", false}, {"chat.bob.x", false},
	} {
		if got := reachesOthers(c.p, "user", "alice"); got != c.want {
			t.Errorf("%q: %v, want %v", c.p, got, c.want)
		}
	}
}

// originUpgrade sends an upgrade with the given Origin ("" for none) and
// returns the response status and body's first line.
func originUpgrade(t *testing.T, n *testNode, origin string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", n.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok := token(t, "acme", "u")
	req := "GET " + SocketPath + " HTTP/1.1\r\nHost: " + n.addr() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + tok + "\r\n"
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := ""
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b := make([]byte, 256)
		k, _ := resp.Body.Read(b)
		body = strings.TrimSpace(string(b[:k]))
	}
	return resp.StatusCode, body
}

// Browser origins over a real socket.
func TestAllowedOrigins(t *testing.T) {
	n := startNode(t, nil, func(c *Config) {
		c.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org", "http://localhost:3000"}
	})
	for _, c := range []struct {
		origin string
		status int
	}{
		{"https://app.example.com", 101},
		{"HTTPS://APP.EXAMPLE.COM", 101},
		{"https://eu.example.org", 101},
		{"https://a.b.example.org", 101},
		{"http://localhost:3000", 101},
		{"", 101}, // not a browser
		{"https://evil.example", 403},
		{"http://app.example.com", 403},
		{"https://app.example.com:8443", 403},
		{"https://example.org", 403},
		{"https://evil.com/.example.org", 403},
		{"https://app.example.com.evil.com", 403},
		{"http://localhost:3001", 403},
		{"null", 403},
	} {
		status, body := originUpgrade(t, n, c.origin)
		if status != c.status || status == 403 && body != "origin not allowed" {
			t.Errorf("Origin %q: %d %q, want %d", c.origin, status, body, c.status)
		}
	}
	if got := counterValue(t, n, "arq_handshake_failures_total"); got != 8 {
		t.Errorf("handshake failures %v, want 8 (origin)", got)
	}
	// Empty: any origin, as before.
	open := startNode(t, nil, nil)
	if status, _ := originUpgrade(t, open, "https://anything.example"); status != 101 {
		t.Errorf("no allowed_origins: %d", status)
	}
	for _, bad := range []string{"example.com", "https://a.com/path", "https://*", "https://a.*.com", "*.example.com"} {
		if _, err := compileOrigins([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// A capability-restricted publisher: still no allocation from decoded
// publish to queued frames.
func TestPublishPathZeroAllocsWithCapabilities(t *testing.T) {
	f := newRouteFixture(t, 100, codecJSON)
	gr, err := auth.CompileCapabilities([]string{"sub:chat.>", "pub:chat.*.msg", "pub:orders.*", "pub:feed.*", "presence:room.*"}, false)
	if err != nil {
		t.Fatal(err)
	}
	pubc := &conn{g: f.g, codec: codecJSON, ident: auth.Identity{Tenant: "t1", Grants: gr}, id: "pub"}
	pubc.state.Store(stateOpen)
	pubc.writing = true
	jsonIn := []byte(`{"op":"pub","subject":"feed.x","data":"hello world"}`)
	d := &decoder{}
	var p fastjson.Parser
	run := func() {
		fr := &d.frame
		pb.ResetClientFrame(fr)
		var err error
		d.scratch, err = pb.DecodeClientJSON(&p, jsonIn, fr, d.scratch)
		if err != nil {
			t.Fatal(err)
		}
		pubc.publish(true, fr)
		f.drain()
	}
	run()
	if allocs := testing.AllocsPerRun(500, run); allocs != 0 && !raceEnabled {
		t.Errorf("%v allocs per publish with capabilities", allocs)
	}
}

// BenchmarkPublishCapabilities: the publish path (decoded frame to frames
// queued for one subscriber) without and with a capability check.
func BenchmarkPublishCapabilities(b *testing.B) {
	for _, caps := range [][]string{nil, {"pub:feed.x"}, {"sub:chat.>", "pub:chat.*.msg", "pub:orders.*.created", "pub:feed.*", "presence:room.*"}} {
		b.Run(fmt.Sprintf("caps=%d", len(caps)), func(b *testing.B) {
			f := newRouteFixture(b, 1, codecProto)
			gr, _ := auth.CompileCapabilities(caps, false)
			pubc := &conn{g: f.g, codec: codecProto, ident: auth.Identity{Tenant: "t1", Grants: gr}, id: "pub"}
			pubc.state.Store(stateOpen)
			pubc.writing = true
			fr := &pb.ClientFrame{Op: pb.Op_OP_PUB, Subject: "feed.x", Data: make([]byte, 128)}
			pubc.publish(false, fr)
			f.drain()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pubc.publish(false, fr)
				f.drain()
			}
		})
	}
}
