package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/spine"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

type testNode struct {
	gw  *Gateway
	url string
	reg *prometheus.Registry
}

// startNode runs a gateway on a free loopback port; sp may be nil.
func startNode(t testing.TB, sp *spine.Spine, mod func(*Config)) *testNode {
	t.Helper()
	v, err := auth.NewVerifier(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := Config{Listen: "127.0.0.1:0", Verifier: v, Spine: sp, Registerer: reg}
	if mod != nil {
		mod(&cfg)
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := gw.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Serve(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	return &testNode{gw: gw, url: "ws://" + ln.Addr().String() + SocketPath, reg: reg}
}

func (n *testNode) addr() string {
	return strings.TrimSuffix(strings.TrimPrefix(n.url, "ws://"), SocketPath)
}

func token(t testing.TB, tenant, user string) string {
	t.Helper()
	tok, err := auth.Mint(testSecret, auth.MintOptions{Tenant: tenant, User: user, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dial(t testing.TB, n *testNode, tenant, user string, codec client.Codec) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: n.url, Token: token(t, tenant, user), Codec: codec})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// recv waits for the next message on s.
func recv(t testing.TB, s *client.Subscription) *client.Message {
	t.Helper()
	select {
	case m, ok := <-s.C:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// rawConn is a hand-driven WebSocket client for protocol tests.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// wsDial upgrades a connection to n with tok as a Bearer token and returns
// it with the reader that holds whatever came after the upgrade response.
// The caller closes it.
func wsDial(t testing.TB, n *testNode, tok string, protocols ...string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := ws.Dialer{Timeout: 5 * time.Second, Protocols: protocols,
		Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})}
	conn, br, _, err := d.Dial(context.Background(), n.url)
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	if br == nil {
		br = bufio.NewReader(conn)
	}
	return conn, br
}

func rawDial(t testing.TB, n *testNode, tok string, protocols ...string) *rawConn {
	t.Helper()
	conn, br := wsDial(t, n, tok, protocols...)
	t.Cleanup(func() { conn.Close() })
	r := &rawConn{t: t, conn: conn, br: br}
	op, p := r.read()
	if op != ws.OpText || !strings.Contains(string(p), `"op":"welcome"`) {
		t.Fatalf("first frame %v %q, want JSON welcome", op, p)
	}
	return r
}

// frame builds a masked client frame.
func frame(fin bool, op ws.OpCode, payload []byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	var b strings.Builder
	_ = ws.WriteHeader(&b, h)
	out := []byte(b.String())
	p := append([]byte(nil), payload...)
	ws.Cipher(p, h.Mask, 0)
	return append(out, p...)
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) send(op ws.OpCode, payload string) { r.write(frame(true, op, []byte(payload))) }

// read returns the next frame, failing on timeout.
func (r *rawConn) read() (ws.OpCode, []byte) {
	r.t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(r.br)
	if err != nil {
		r.t.Fatalf("read header: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r.br, p); err != nil {
		r.t.Fatalf("read payload: %v", err)
	}
	if h.Masked {
		r.t.Fatal("server frame is masked")
	}
	if !h.Fin {
		r.t.Fatal("server fragmented a frame")
	}
	return h.OpCode, p
}

// readText reads frames until a text frame.
func (r *rawConn) readText() string {
	r.t.Helper()
	for {
		op, p := r.read()
		if op == ws.OpText {
			return string(p)
		}
		if op == ws.OpClose {
			r.t.Fatalf("closed: %s", closeString(p))
		}
	}
}

// expectClose reads until a close frame and returns its code.
func (r *rawConn) expectClose() int {
	r.t.Helper()
	for {
		op, p := r.read()
		if op == ws.OpClose {
			if len(p) < 2 {
				return 0
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
}

// expectEOF waits for the server to close the TCP connection.
func (r *rawConn) expectEOF() {
	r.t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r.br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		r.t.Fatal("connection still open after 10s")
	}
}

func closeString(p []byte) string {
	if len(p) < 2 {
		return "(empty)"
	}
	return fmt.Sprintf("%d %s", binary.BigEndian.Uint16(p), p[2:])
}

// startClusterNode starts a gateway node called id whose spine joins the
// NATS server at url.
func startClusterNode(t testing.TB, url, id string) *testNode {
	t.Helper()
	sp, err := spine.New(spine.Config{URL: url, NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	return startNode(t, sp, func(c *Config) { c.NodeID = id })
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// counterValue sums a metric family from the node's registry.
func counterValue(t testing.TB, n *testNode, name string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
	}
	return sum
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
