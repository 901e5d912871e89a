package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/spinetest"
)

// User Story 1: a valid token gets WELCOME; others get 401 and no upgrade.
func TestAuthAtUpgrade(t *testing.T) {
	n := startNode(t, nil, nil)
	now := time.Now()
	expired, _ := auth.Mint(testSecret, auth.MintOptions{Tenant: "t1", User: "u", TTL: time.Minute, Now: now.Add(-time.Hour)})
	otherKey, _ := auth.Mint([]byte("another-secret-another-secret-another-secret"), auth.MintOptions{Tenant: "t1", User: "u"})
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{
		"sub": "u", "tenant_id": "t1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	badTenant, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "u", "tenant_id": "a.b", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}).SignedString(testSecret)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "u", "tenant_id": "t1", "iat": now.Unix(),
	}).SignedString(testSecret)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{
		"sub": "u", "tenant_id": "t1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}).SignedString(testSecret)

	cases := []struct {
		name, header, query, reason string
	}{
		{"missing", "", "", "missing token"},
		{"malformed", "Bearer not-a-jwt", "", "malformed token"},
		{"not bearer", "Basic dXNlcjpwYXNz", "", "missing token"},
		{"bad signature", "Bearer " + otherKey, "", "bad signature"},
		{"alg none", "Bearer " + none, "", "algorithm not allowed"},
		{"hs512", "Bearer " + hs512, "", "algorithm not allowed"},
		{"expired", "Bearer " + expired, "", "token expired"},
		{"expired in query", "", "?token=" + expired, "token expired"},
		{"bad tenant", "Bearer " + badTenant, "", "invalid tenant_id"},
		{"no exp", "Bearer " + noExp, "", "missing or invalid claims"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, hdr, body := rawUpgrade(t, n, c.query, c.header)
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401 (body %q)", status, body)
			}
			if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate = %q", hdr.Get("WWW-Authenticate"))
			}
			if !strings.Contains(body, c.reason) {
				t.Fatalf("body %q, want reason %q", body, c.reason)
			}
		})
	}

	t.Run("valid header", func(t *testing.T) {
		c := dial(t, n, "t1", "alice", client.Protobuf)
		w := c.Welcome()
		if w.Tenant != "t1" || w.User != "alice" || w.SessionId == "" || w.NodeId != n.gw.NodeID() || w.Limits.GetMaxFrameBytes() == 0 {
			t.Fatalf("welcome %+v", w)
		}
	})
	t.Run("valid query json", func(t *testing.T) {
		c, err := client.Dial(ctx(t), client.Options{URL: n.url, Token: token(t, "t1", "bob"), TokenInQuery: true, Codec: client.JSON})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.Welcome().User != "bob" || c.Welcome().HeartbeatIntervalMs == 0 {
			t.Fatalf("welcome %+v", c.Welcome())
		}
	})
	t.Run("client reports 401", func(t *testing.T) {
		_, err := client.Dial(ctx(t), client.Options{URL: n.url, Token: expired})
		if !errors.Is(err, client.ErrUnauthorized) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("wrong path", func(t *testing.T) {
		conn, err := net.Dial("tcp", n.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != 404 {
			t.Fatalf("resp %v err %v", resp, err)
		}
	})
}

// rawUpgrade sends an upgrade request and returns the HTTP response.
func rawUpgrade(t *testing.T, n *testNode, query, authz string) (int, http.Header, string) {
	t.Helper()
	conn, err := net.Dial("tcp", n.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET " + SocketPath + query + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	if authz != "" {
		req += "Authorization: " + authz + "\r\n"
	}
	io.WriteString(conn, req+"\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, resp.Header, string(body)
}

// User Story 2: B receives what A publishes; another tenant's ">" sees nothing.
func TestPubSubAndTenantIsolation(t *testing.T) {
	n := startNode(t, nil, nil)
	a := dial(t, n, "t1", "a", client.Protobuf)
	b := dial(t, n, "t1", "b", client.JSON)
	other := dial(t, n, "t2", "eve", client.Protobuf)

	sb, err := b.Subscribe(ctx(t), "chat.*")
	if err != nil {
		t.Fatal(err)
	}
	so, err := other.Subscribe(ctx(t), ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PublishAck(ctx(t), "chat.lobby", []byte("hello"), client.PublishOptions{Text: true, Headers: map[string]string{"trace-id": "tr-1"}}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, sb)
	if m.Subject != "chat.lobby" || string(m.Data) != "hello" || !m.Text || m.TraceID != "tr-1" || m.Headers["trace-id"] != "tr-1" || m.Timestamp.IsZero() {
		t.Fatalf("got %+v", m)
	}
	// The other tenant's first message must be its own marker: anything of
	// t1's would have been queued before it.
	if err := other.PublishAck(ctx(t), "marker", []byte("m"), client.PublishOptions{Text: true}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, so); m.Subject != "marker" {
		t.Fatalf("tenant t2 received %q from another tenant", m.Subject)
	}
}

// A publisher receives its own message only when it is itself subscribed.
func TestPublisherEcho(t *testing.T) {
	n := startNode(t, nil, nil)
	a := dial(t, n, "t1", "a", client.JSON)
	s, err := a.Subscribe(ctx(t), "self.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PublishAck(ctx(t), "other.x", []byte("not for me"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.PublishAck(ctx(t), "self.x", []byte("mine"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, s); m.Subject != "self.x" || string(m.Data) != "mine" {
		t.Fatalf("got %+v", m)
	}
}

// Overlapping patterns deliver a message once per connection.
func TestOverlappingSubscriptionsDeliverOnce(t *testing.T) {
	n := startNode(t, nil, nil)
	c := dial(t, n, "t1", "a", client.Protobuf)
	r := rawDial(t, n, token(t, "t1", "raw"))
	for i, p := range []string{"a.*", "a.>", "a.b"} {
		r.send(ws.OpText, `{"op":"sub","id":`+string(rune('1'+i))+`,"subject":"`+p+`"}`)
		if got := r.readText(); !strings.Contains(got, `"op":"ack"`) {
			t.Fatalf("sub %s: %s", p, got)
		}
	}
	for _, subj := range []string{"a.b", "a.c"} {
		if err := c.PublishAck(ctx(t), subj, []byte("x"), client.PublishOptions{Text: true}); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.readText(); !strings.Contains(got, `"subject":"a.b"`) {
		t.Fatalf("first: %s", got)
	}
	if got := r.readText(); !strings.Contains(got, `"subject":"a.c"`) {
		t.Fatalf("second (a duplicate of a.b?): %s", got)
	}
}

// Binary from a Protobuf publisher reaches JSON subscribers as data_b64;
// a JSON publisher's string reaches Protobuf subscribers as its bytes.
func TestCodecCrossing(t *testing.T) {
	n := startNode(t, nil, nil)
	pbc := dial(t, n, "t1", "p", client.Protobuf)
	r := rawDial(t, n, token(t, "t1", "j"))
	r.send(ws.OpText, `{"op":"sub","id":1,"subject":"x.>"}`)
	if got := r.readText(); got != `{"op":"ack","id":1}` {
		t.Fatalf("ack: %s", got)
	}
	sp, err := pbc.Subscribe(ctx(t), "x.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := pbc.PublishAck(ctx(t), "x.bin", []byte{0, 1, 2, 0xff}, client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := r.readText(); !strings.Contains(got, `"data_b64":"AAEC/w=="`) {
		t.Fatalf("json subscriber got %s", got)
	}
	if m := recv(t, sp); string(m.Data) != "\x00\x01\x02\xff" || m.Text {
		t.Fatalf("pb subscriber got %+v", m)
	}
	r.send(ws.OpText, `{"op":"pub","id":2,"subject":"x.txt","data":"héllo \"q\"","ack":true}`)
	if got := r.readText(); !strings.Contains(got, `"op":"msg"`) || !strings.Contains(got, `"data":"héllo \"q\""`) {
		t.Fatalf("json echo: %s", got)
	}
	if got := r.readText(); got != `{"op":"ack","id":3}` && got != `{"op":"ack","id":2}` {
		t.Fatalf("ack: %s", got)
	}
	if m := recv(t, sp); string(m.Data) != `héllo "q"` || !m.Text {
		t.Fatalf("pb subscriber got %+v", m)
	}
}

// Two gateway nodes on one NATS server: a subscriber on node 2 receives a
// publish made on node 1, exactly once.
func TestTwoNodesExactlyOnce(t *testing.T) {
	url := spinetest.NATS(t)
	n1, n2 := startClusterNode(t, url, "node-1"), startClusterNode(t, url, "node-2")
	pub := dial(t, n1, "t1", "pub", client.Protobuf)
	local := dial(t, n1, "t1", "local", client.Protobuf)
	remote := dial(t, n2, "t1", "remote", client.JSON)
	foreign := dial(t, n2, "t2", "foreign", client.JSON)
	sr, err := remote.Subscribe(ctx(t), "orders.>")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := local.Subscribe(ctx(t), "orders.*")
	if err != nil {
		t.Fatal(err)
	}
	sf, err := foreign.Subscribe(ctx(t), ">")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"orders.1", "orders.2"} {
		if err := pub.PublishAck(ctx(t), s, []byte(s), client.PublishOptions{Text: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"orders.1", "orders.2"} {
		if m := recv(t, sr); m.Subject != want {
			t.Fatalf("remote got %s, want %s (duplicate or loss)", m.Subject, want)
		}
		if m := recv(t, sl); m.Subject != want {
			t.Fatalf("local got %s, want %s", m.Subject, want)
		}
	}
	// node 2 publishes a marker: it reaches node 1's subscriber after
	// nothing else, so node 1 did not get its own envelopes back.
	pub2 := dial(t, n2, "t1", "pub2", client.Protobuf)
	if err := pub2.PublishAck(ctx(t), "orders.marker", []byte("m"), client.PublishOptions{Text: true}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, sl); m.Subject != "orders.marker" {
		t.Fatalf("local got %s, want the marker", m.Subject)
	}
	if m := recv(t, sr); m.Subject != "orders.marker" {
		t.Fatalf("remote got %s after the two messages, want the marker", m.Subject)
	}
	if err := foreign.PublishAck(ctx(t), "fmark", nil, client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, sf); m.Subject != "fmark" {
		t.Fatalf("tenant t2 on node 2 received %s", m.Subject)
	}
}

func TestDrainSendsGoingAway(t *testing.T) {
	n := startNode(t, nil, nil)
	r := rawDial(t, n, token(t, "t1", "a"))
	done := make(chan error, 1)
	go func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- n.gw.Shutdown(c)
	}()
	if code := r.expectClose(); code != 1001 {
		t.Fatalf("close code %d, want 1001", code)
	}
	r.send(ws.OpClose, "\x03\xe9")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n.gw.Ready() {
		t.Fatal("ready after shutdown")
	}
}
