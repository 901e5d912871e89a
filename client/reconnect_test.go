package client_test

// Reconnection against a real gateway (startBus: gateway, embedded NATS,
// a brain in memory) through a real TCP proxy the tests cut, stop and
// black-hole. No test asserts a duration: timeouts only guard failures.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
)

// proxy forwards TCP connections from its own loopback address to target.
type proxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	pairs map[*pair]struct{}
	wg    sync.WaitGroup
}

type pair struct {
	a, b      net.Conn
	hole      atomic.Bool  // forward nothing more
	swallowed atomic.Int64 // bytes not forwarded
}

// proxyTo starts a proxy in front of b's gateway.
func proxyTo(t *testing.T, b *bus) *proxy {
	t.Helper()
	return startProxy(t, strings.TrimSuffix(strings.TrimPrefix(b.url, "ws://"), "/v1/socket"))
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: target, addr: ln.Addr().String(), pairs: map[*pair]struct{}{}}
	p.serve(ln)
	t.Cleanup(func() {
		p.down()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "ws://" + p.addr + "/v1/socket" }

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.target)
			if err != nil {
				a.Close()
				continue
			}
			pr := &pair{a: a, b: b}
			p.mu.Lock()
			p.pairs[pr] = struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			go p.copy(pr, a, b)
			go p.copy(pr, b, a)
		}
	}()
}

func (p *proxy) copy(pr *pair, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if pr.hole.Load() {
				pr.swallowed.Add(int64(n))
			} else if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			pr.a.Close()
			pr.b.Close()
			p.mu.Lock()
			delete(p.pairs, pr)
			p.mu.Unlock()
			return
		}
	}
}

// cut closes every forwarded connection (both sides see it end).
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		pr.a.Close()
		pr.b.Close()
	}
}

// down stops accepting: new connections are refused.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
}

// up accepts again on the same address.
func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

// blackhole makes the current connections forward nothing more, silently.
func (p *proxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.pairs {
		pr.hole.Store(true)
	}
}

func (p *proxy) swallowed() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for pr := range p.pairs {
		n += pr.swallowed.Load()
	}
	return n
}

// events records a client's callbacks.
type events struct {
	disconnects chan error
	reconnects  chan string
	tokens      atomic.Int32
}

func newEvents() *events {
	return &events{disconnects: make(chan error, 100), reconnects: make(chan string, 100)}
}

// options are reconnecting options with fast backoff; every token is for
// user "<user>-<n>", n counting the calls of TokenFunc from 1.
func (ev *events) options(t *testing.T, tenant, user string, urls ...string) client.Options {
	return client.Options{
		URLs:          urls,
		NoRandomize:   true,
		Reconnect:     true,
		ReconnectWait: 20 * time.Millisecond,
		DialTimeout:   5 * time.Second,
		TokenFunc: func(ctx context.Context) (string, error) {
			n := ev.tokens.Add(1)
			return auth.Mint(e2eSecret, auth.MintOptions{Tenant: tenant, User: fmt.Sprintf("%s-%d", user, n), TTL: time.Hour})
		},
		OnDisconnect: func(err error) { ev.disconnects <- err },
		OnReconnect:  func(url string) { ev.reconnects <- url },
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: nothing in 15 s", what)
	}
	var zero T
	return zero
}

func waitDone(t *testing.T, c *client.Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("client not done in 15 s")
	}
}

// message waits for the next message on s.
func message(t *testing.T, s *client.Subscription) *client.Message {
	t.Helper()
	return recv(t, s.C, "message on "+s.Pattern)
}

// clientGoroutines counts the goroutines running in package client.
func clientGoroutines() (int, string) {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	var sample string
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "arqonbus/client.(") {
			n++
			sample = g
		}
	}
	return n, sample
}

// noLeaks waits until no goroutine of package client is left.
func noLeaks(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, sample := clientGoroutines()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d client goroutines left, e.g.:\n%s", n, sample)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReconnectResubscribes(t *testing.T) {
	b := startBus(t, true)
	codecs(t, func(t *testing.T, codec client.Codec) {
		ctx := testCtx(t)
		px := proxyTo(t, b)
		ev := newEvents()
		o := ev.options(t, "acme", "ann", px.url())
		o.Codec = codec
		c, err := client.Dial(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		room := fmt.Sprintf("room.re%d", codec)
		chat, err := c.Subscribe(ctx, "chat.>")
		if err != nil {
			t.Fatal(err)
		}
		member, err := c.SubscribePresence(ctx, room, []byte(`{"name":"Ann"}`))
		if err != nil {
			t.Fatal(err)
		}
		first := c.Welcome()
		expectEvent(t, member, client.PresenceUpdate, first.SessionId, "")
		pub := b.dial(t, "acme", "pub", client.JSON)
		watcher := b.dial(t, "acme", "watcher", client.JSON) // sees ann leave and join
		wroom, err := watcher.SubscribePresence(ctx, room, nil)
		if err != nil {
			t.Fatal(err)
		}
		expectEvent(t, wroom, client.PresenceUpdate, watcher.Welcome().SessionId, "")
		if err := pub.PublishAck(ctx, "chat.a", []byte("before"), client.PublishOptions{Text: true}); err != nil {
			t.Fatal(err)
		}
		if m := message(t, chat); string(m.Data) != "before" {
			t.Fatalf("got %q", m.Data)
		}

		px.cut()
		if err := recv(t, ev.disconnects, "OnDisconnect"); err == nil {
			t.Fatal("OnDisconnect(nil)")
		}
		if url := recv(t, ev.reconnects, "OnReconnect"); url != px.url() {
			t.Fatalf("reconnected to %s", url)
		}
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
		second := c.Welcome()
		if second.SessionId == first.SessionId || second.User != "ann-2" || ev.tokens.Load() != 2 {
			t.Fatalf("after reconnect: session %s (was %s), user %s, %d tokens", second.SessionId, first.SessionId, second.User, ev.tokens.Load())
		}
		if c.ConnectedURL() != px.url() || c.Err() != nil {
			t.Fatalf("ConnectedURL %q, Err %v", c.ConnectedURL(), c.Err())
		}

		// The same channels deliver again: messages and the new session's join.
		var ev2 *client.PresenceEvent
		for ev2 == nil {
			e := event(t, member)
			if e.Type == client.PresenceUpdate && e.Member.Session == second.SessionId {
				ev2 = e
			} else if e.Member.Session != watcher.Welcome().SessionId {
				t.Fatalf("member: %v %+v", e.Type, e)
			}
		}
		if string(ev2.Member.Info) != `{"name":"Ann"}` || ev2.Member.User != "ann-2" {
			t.Fatalf("rejoined as %+v", ev2.Member)
		}
		if err := pub.PublishAck(ctx, "chat.b", []byte("after"), client.PublishOptions{Text: true}); err != nil {
			t.Fatal(err)
		}
		if m := message(t, chat); string(m.Data) != "after" || m.Subject != "chat.b" {
			t.Fatalf("got %s %q", m.Subject, m.Data)
		}
		// The watcher saw the old session leave and the new one join.
		seen := map[string]bool{}
		for len(seen) < 2 {
			e := event(t, wroom)
			switch {
			case e.Type == client.PresenceLeave && e.Member.Session == first.SessionId:
				seen["leave"] = true
			case e.Type == client.PresenceUpdate && e.Member.Session == second.SessionId:
				seen["join"] = true
			default:
				t.Fatalf("watcher: %v %+v", e.Type, e)
			}
		}
		all, err := watcher.PresenceAll(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		if len(all.Members) != 2 {
			t.Fatalf("members %+v", all.Members)
		}
		// The client works as before: publish, request, unsubscribe.
		if err := c.PublishAck(ctx, "chat.c", []byte("own"), client.PublishOptions{Text: true}); err != nil {
			t.Fatal(err)
		}
		if m := message(t, chat); string(m.Data) != "own" {
			t.Fatalf("got %q", m.Data)
		}
		if err := member.Unsubscribe(ctx); err != nil {
			t.Fatal(err)
		}
		expectEvent(t, wroom, client.PresenceLeave, second.SessionId, "unsubscribe")
		c.Close()
		if _, ok := <-chat.C; ok {
			t.Fatal("message after Close")
		}
		if !errors.Is(c.Err(), client.ErrClosed) {
			t.Fatalf("Err %v", c.Err())
		}
	})
	noLeaks(t)
}

// While disconnected everything fails at once with ErrDisconnected; an
// unsubscription then is local and the next connection does not restore it.
func TestReconnectWhileDisconnected(t *testing.T) {
	b := startBus(t, true)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	ev := newEvents()
	o := ev.options(t, "acme", "ann", px.url())
	o.MaxReconnects = -1
	o.MaxReconnectWait = 50 * time.Millisecond
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keep, err := c.Subscribe(ctx, "keep.*")
	if err != nil {
		t.Fatal(err)
	}
	drop, err := c.Subscribe(ctx, "drop.*")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := c.SubscribePresence(ctx, "room.gone", nil)
	if err != nil {
		t.Fatal(err)
	}
	px.down()
	px.cut()
	recv(t, ev.disconnects, "OnDisconnect")
	for _, err := range []error{
		c.Publish(ctx, "keep.x", []byte("x")),
		c.PublishAck(ctx, "keep.x", []byte("x"), client.PublishOptions{}),
		c.Ping(ctx),
	} {
		if !errors.Is(err, client.ErrDisconnected) {
			t.Fatalf("while disconnected: %v", err)
		}
	}
	if _, err := c.Subscribe(ctx, "new.*"); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("subscribe while disconnected: %v", err)
	}
	if _, err := c.Presence(ctx, "room.gone", client.PresenceOptions{}); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("presence while disconnected: %v", err)
	}
	if c.ConnectedURL() != "" || c.Err() != nil {
		t.Fatalf("ConnectedURL %q Err %v", c.ConnectedURL(), c.Err())
	}
	select {
	case <-c.Done():
		t.Fatal("Done while reconnecting")
	default:
	}
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := c.WaitConnected(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected: %v", err)
	}
	cancel()
	for _, s := range []*client.Subscription{drop, gone} {
		if err := s.Unsubscribe(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-s.C; ok {
			t.Fatal("unsubscribed channel open")
		}
	}
	px.up()
	recv(t, ev.reconnects, "OnReconnect")
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	pub := b.dial(t, "acme", "pub", client.Protobuf)
	for _, subj := range []string{"drop.x", "keep.x"} {
		if err := pub.PublishAck(ctx, subj, []byte(subj), client.PublishOptions{Text: true}); err != nil {
			t.Fatal(err)
		}
	}
	if m := message(t, keep); m.Subject != "keep.x" {
		t.Fatalf("got %s", m.Subject)
	}
	// Not a member of the room it left while disconnected.
	if a, err := pub.Presence(ctx, "room.gone", client.PresenceOptions{}); err != nil || a.Count != 0 {
		t.Fatalf("room.gone: %+v %v", a, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := ev.tokens.Load(); n < 2 {
		t.Fatalf("%d tokens", n)
	}
}

// A request in flight when the connection dies fails with ErrDisconnected.
func TestReconnectFailsPending(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	ev := newEvents()
	c, err := client.Dial(ctx, ev.options(t, "acme", "ann", px.url()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	px.blackhole()
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(ctx) }()
	for i := 0; px.swallowed() == 0; i++ { // the ping was sent
		if i > 1000 {
			t.Fatal("the ping never reached the proxy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	px.cut()
	if err := recv(t, errc, "Ping"); !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("pending ping: %v", err)
	}
	recv(t, ev.reconnects, "OnReconnect")
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// The keepalive notices a connection that went silent (no close, no
// reset) and reconnects.
func TestReconnectKeepalive(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	ev := newEvents()
	o := ev.options(t, "acme", "ann", px.url())
	o.PingInterval = 100 * time.Millisecond
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, "k.>")
	if err != nil {
		t.Fatal(err)
	}
	px.blackhole()
	if err := recv(t, ev.disconnects, "OnDisconnect"); !strings.Contains(err.Error(), "ping") {
		t.Fatalf("disconnected by %v", err)
	}
	recv(t, ev.reconnects, "OnReconnect")
	pub := b.dial(t, "acme", "pub", client.Protobuf)
	if err := pub.PublishAck(ctx, "k.1", []byte("x"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	message(t, sub)
}

// Close while the client waits to reconnect ends it: Done, ErrClosed,
// channels closed, no more attempts, no goroutine left.
func TestReconnectCloseStops(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	ev := newEvents()
	o := ev.options(t, "acme", "ann", px.url())
	o.MaxReconnects = -1
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscribe(ctx, "x.>")
	if err != nil {
		t.Fatal(err)
	}
	px.down()
	px.cut()
	recv(t, ev.disconnects, "OnDisconnect")
	for i := 0; ev.tokens.Load() < 4; i++ { // a few attempts failed
		if i > 1500 {
			t.Fatalf("%d attempts", ev.tokens.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	select {
	case <-c.Done():
	default:
		t.Fatal("Done open after Close")
	}
	if !errors.Is(c.Err(), client.ErrClosed) {
		t.Fatalf("Err %v", c.Err())
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("subscription open after Close")
	}
	if err := c.Publish(ctx, "x.1", nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
	if err := c.WaitConnected(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("WaitConnected after Close: %v", err)
	}
	noLeaks(t)
	n := ev.tokens.Load()
	px.up() // a reconnect would succeed now
	time.Sleep(200 * time.Millisecond)
	if ev.tokens.Load() != n || len(ev.reconnects) != 0 {
		t.Fatalf("attempts after Close: %d tokens (was %d), %d reconnects", ev.tokens.Load(), n, len(ev.reconnects))
	}
}

// The client gives up after MaxReconnects attempts in a row.
func TestReconnectGivesUp(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	ev := newEvents()
	o := ev.options(t, "acme", "ann", px.url())
	o.MaxReconnects = 3
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, "x.>")
	if err != nil {
		t.Fatal(err)
	}
	px.down()
	px.cut()
	recv(t, ev.disconnects, "OnDisconnect")
	waitDone(t, c)
	if !errors.Is(c.Err(), client.ErrReconnectFailed) || !strings.Contains(c.Err().Error(), "after 3 attempts") {
		t.Fatalf("Err %v", c.Err())
	}
	if n := ev.tokens.Load(); n != 4 {
		t.Fatalf("%d tokens, want 1 + 3", n)
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("subscription open after giving up")
	}
	if len(ev.reconnects) != 0 {
		t.Fatal("OnReconnect called")
	}
	if err := c.Ping(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("ping: %v", err)
	}
	noLeaks(t)
}

// A static token refused at a reconnect ends the client: the same token
// would be refused again.
func TestReconnectStaticTokenRefused(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	// Expired 3 s ago: the upgrade still takes it for 2 s (5 s leeway).
	tok, err := auth.Mint(e2eSecret, auth.MintOptions{Tenant: "acme", User: "ann", Now: time.Now().Add(-time.Hour), TTL: time.Hour - 3*time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, client.Options{URL: px.url(), Token: tok, Reconnect: true, MaxReconnects: -1, ReconnectWait: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; ; i++ { // reconnect until the upgrade refuses the token
		px.cut()
		select {
		case <-c.Done():
		case <-time.After(100 * time.Millisecond):
			if i > 300 {
				t.Fatal("client still running")
			}
			continue
		}
		break
	}
	// Either the upgrade refused the token (401) or, first, the server
	// closed the live connection because it expired (1008): the client
	// ends both ways, a static token being of no further use.
	var ce *client.CloseError
	expiredClose := errors.As(c.Err(), &ce) && ce.Code == 1008 && strings.Contains(ce.Reason, "expired")
	if !errors.Is(c.Err(), client.ErrUnauthorized) && !expiredClose {
		t.Fatalf("Err %v", c.Err())
	}
}

// Dial goes through the address list until a node answers.
func TestDialAddressList(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ws://" + ln.Addr().String() + "/v1/socket"
	ln.Close()
	tok, err := auth.Mint(e2eSecret, auth.MintOptions{Tenant: "acme", User: "ann", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, client.Options{URL: dead, URLs: []string{b.url, dead}, NoRandomize: true, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	if c.ConnectedURL() != b.url {
		t.Fatalf("connected to %q", c.ConnectedURL())
	}
	c.Close()
	_, err = client.Dial(ctx, client.Options{URLs: []string{dead, dead + "?x"}, Token: tok})
	if err == nil || strings.Count(err.Error(), "client: dial") != 2 {
		t.Fatalf("all dead: %v", err)
	}
	// A refused token ends Dial at once.
	if _, err := client.Dial(ctx, client.Options{URLs: []string{b.url, b.url + "?y"}, Token: "nope"}); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	noLeaks(t)
}

// Without Reconnect nothing changes: the first connection's end is the
// client's end.
func TestNoReconnectByDefault(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	tok, err := auth.Mint(e2eSecret, auth.MintOptions{Tenant: "acme", User: "ann", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, client.Options{URL: px.url(), Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscribe(ctx, "x.>")
	if err != nil {
		t.Fatal(err)
	}
	px.cut()
	waitDone(t, c)
	if err := c.Err(); err == nil || errors.Is(err, client.ErrClosed) {
		t.Fatalf("Err %v", err)
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("subscription open")
	}
	if err := c.Ping(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("ping: %v", err)
	}
	noLeaks(t)
}

// A pattern the new connection refuses (the new token lacks the
// capability) ends its subscriptions; OnError says why; the others go on.
func TestReconnectRefusedPattern(t *testing.T) {
	b := startBus(t, false)
	ctx := testCtx(t)
	px := proxyTo(t, b)
	ev := newEvents()
	o := ev.options(t, "acme", "ann", px.url())
	o.TokenFunc = func(ctx context.Context) (string, error) {
		mo := auth.MintOptions{Tenant: "acme", User: "ann", TTL: time.Hour}
		if ev.tokens.Add(1) > 1 {
			mo.Capabilities = []string{"sub:chat.>", "pub:chat.>"}
		}
		return auth.Mint(e2eSecret, mo)
	}
	refused := make(chan *client.ServerError, 10)
	o.OnError = func(e *client.ServerError) { refused <- e }
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chat, err := c.Subscribe(ctx, "chat.>")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := c.Subscribe(ctx, "secret.>")
	if err != nil {
		t.Fatal(err)
	}
	px.cut()
	recv(t, ev.reconnects, "OnReconnect")
	if e := recv(t, refused, "OnError"); e.Code != "AUTHORIZATION_DENIED" {
		t.Fatalf("OnError %v", e)
	}
	select {
	case _, ok := <-secret.C:
		if ok {
			t.Fatal("message on the refused subscription")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("refused subscription still open")
	}
	if err := c.PublishAck(ctx, "chat.x", []byte("x"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := message(t, chat); m.Subject != "chat.x" {
		t.Fatalf("got %s", m.Subject)
	}
	if err := secret.Unsubscribe(ctx); err != nil { // already ended: nothing to do
		t.Fatalf("unsubscribe of the ended subscription: %v", err)
	}
}
