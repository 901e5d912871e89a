// Package client is the Go client for ArqonBus: dial a gateway with a
// token, subscribe, publish, close. It speaks either codec (Protobuf in
// binary frames, the default, or JSON in text frames) and is used by the
// arq CLI, the tests and the load generator.
//
//	c, err := client.Dial(ctx, client.Options{URL: "ws://127.0.0.1:8080/v1/socket", Token: tok})
//	sub, err := c.Subscribe(ctx, "chat.>")
//	err = c.Publish(ctx, "chat.lobby", []byte("hello"))
//	msg := <-sub.C
//
// Presence: SubscribePresence joins a room as a member and delivers the
// room's joins and leaves on Subscription.Presence; Presence and PresenceAll
// ask for the room's members.
//
//	room, err := c.SubscribePresence(ctx, "room.1", []byte(`{"name":"ann"}`))
//	ev := <-room.Presence // *PresenceEvent: PresenceUpdate (a join) or PresenceLeave
//	all, err := c.PresenceAll(ctx, "room.1")
//
// # Reconnecting
//
// By default a Client is one connection: when it ends, Done is closed and
// Err says why. With Options.Reconnect the client instead survives the loss
// of its gateway node:
//
//	c, err := client.Dial(ctx, client.Options{
//		URLs:      []string{"ws://gw1:8080/v1/socket", "ws://gw2:8080/v1/socket", "ws://gw3:8080/v1/socket"},
//		Reconnect: true,
//		TokenFunc: func(ctx context.Context) (string, error) { return fetchToken(ctx) },
//		OnDisconnect: func(err error) { log.Print("disconnected: ", err) },
//		OnReconnect:  func(url string) { log.Print("reconnected to ", url) },
//	})
//
// Dial tries the addresses once each, in random order (Options.NoRandomize
// keeps the given order). When an established connection ends, the client
// tries the addresses in turn, the node it lost last, waiting before each
// attempt a random duration in [0, min(MaxReconnectWait, ReconnectWait·2ⁿ)]
// for the n-th attempt (exponential backoff with full jitter: 250 ms and
// 30 s by default), at most MaxReconnects attempts in a row (60 by default,
// negative: forever). Every attempt asks TokenFunc, if set, for a fresh
// token. Once connected again it subscribes every live Subscription again
// (presence ones with their info) before it reports OnReconnect; the
// Subscription values and their channels stay the same (a pattern the new
// connection refuses, e.g. for the new token's capabilities, ends its
// subscriptions, and OnError gets the ERROR). Messages published while no
// connection was subscribed are not delivered (at most once, no replay). A presence member reconnects as a new session: the room sees the
// old session leave and the new one join, and Welcome changes.
//
// While disconnected, Publish, Subscribe, requests and queries fail at once
// with an error wrapping ErrDisconnected (nothing is buffered); a request in
// flight when the connection ended fails the same way (its outcome is
// unknown: a publish may have been routed). WaitConnected waits for the
// connection to come back. Done is closed only when the client is closed or
// gives up (Err then wraps ErrReconnectFailed and the last attempt's error,
// or ErrUnauthorized / ErrForbidden when the static Token was refused, or
// the *CloseError of a "token expired" close when there is no TokenFunc);
// the subscriptions' channels are closed then, not on a reconnect.
//
// With Reconnect the client also checks that its connection is alive: it
// pings the gateway every PingInterval (by default half the server's
// heartbeat interval, at most 15 s) and drops a connection that answered
// nothing for a whole interval, so a vanished host is noticed too.
package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/valyala/fastjson"

	"github.com/arqonbus/arqonbus/pb"
)

// Codec selects how frames are encoded.
type Codec int

// Codecs.
const (
	Protobuf Codec = iota // binary frames
	JSON                  // text frames
)

// Errors returned by the client.
var (
	ErrUnauthorized = errors.New("client: unauthorized (HTTP 401)")
	ErrForbidden    = errors.New("client: forbidden by policy (HTTP 403)")
	ErrClosed       = errors.New("client: connection closed")
	ErrNoWelcome    = errors.New("client: server did not send WELCOME")
	// ErrDisconnected: the client has no connection at the moment and is
	// reconnecting (Options.Reconnect). The operation was not done, or, for
	// a request in flight when the connection ended, its outcome is
	// unknown. Retry after WaitConnected.
	ErrDisconnected = errors.New("client: disconnected (reconnecting)")
	// ErrReconnectFailed: the client gave up reconnecting after
	// MaxReconnects attempts in a row; Err wraps it and the last error.
	ErrReconnectFailed = errors.New("client: reconnecting failed")
)

// ServerError is an ERROR frame from the server.
type ServerError struct {
	Code    string // "VALIDATION_ERROR", "POLICY_BLOCKED", "UNAVAILABLE", ...
	Message string
}

func (e *ServerError) Error() string { return "arqonbus: " + e.Code + ": " + e.Message }

// Is reports whether target is a *ServerError with the same Code, so that
// errors.Is(err, client.ErrUnavailable) tests an error's code.
func (e *ServerError) Is(target error) bool {
	t, ok := target.(*ServerError)
	return ok && t.Code == e.Code
}

// Errors carrying a server error code, for errors.Is. errors.As with a
// *ServerError gives the server's message too.
var (
	// ErrUnavailable: a service the request needs (the presence brain or its
	// store) did not answer; the request may be retried.
	ErrUnavailable = &ServerError{Code: "UNAVAILABLE", Message: "service unavailable"}
	// ErrValidation: the server rejected the request as malformed.
	ErrValidation = &ServerError{Code: "VALIDATION_ERROR", Message: "validation error"}
)

// ErrPresenceInfo is returned by SubscribePresence for info that is not
// one JSON object in strict JSON (valid UTF-8, no raw control characters).
var ErrPresenceInfo = errors.New("client: presence info must be a JSON object")

// Options configure Dial. Zero fields mean defaults.
type Options struct {
	// URL of the socket endpoint; default "ws://127.0.0.1:8080/v1/socket"
	// when URLs is empty too.
	URL string
	// URLs are the socket endpoints of several gateway nodes of one bus
	// (with URL, if set, the client's address list). Dial connects to the
	// first that answers and, with Reconnect, reconnects through the list.
	URLs []string
	// NoRandomize keeps the address list in its order; by default Dial
	// shuffles it once, so that many clients spread over the nodes.
	NoRandomize bool
	// Token is the JWT, sent as "Authorization: Bearer".
	Token string
	// TokenFunc, when set, is asked for the token before every connection
	// attempt, the first included, and Token is not used (tokens expire: a
	// reconnect needs a fresh one). An error fails that attempt. It gets a
	// context that ends with DialTimeout or Close.
	TokenFunc func(ctx context.Context) (string, error)
	// TokenInQuery sends the token as the "token" query parameter instead
	// (as browsers must).
	TokenInQuery bool
	// Codec for this connection; default Protobuf.
	Codec Codec
	// DialTimeout bounds the TCP connect, the upgrade and WELCOME; default
	// 10s.
	DialTimeout time.Duration
	// LocalAddr, when set, is the local address to dial from (to spread
	// many connections over several loopback source addresses).
	LocalAddr net.Addr
	// Buffer is the capacity of each subscription's channel; default 1024.
	// A full channel blocks the reader: the server then sees a slow consumer.
	Buffer int
	// OnError receives ERROR frames that answer no request (e.g.
	// SLOW_CONSUMER, or a subscription the server refused to restore after
	// a reconnect); nil ignores them. It runs on the reader: it must not
	// block, nor call Close.
	OnError func(*ServerError)
	// TLSConfig for wss:// URLs (e.g. RootCAs of a private CA); nil uses
	// the system's roots.
	TLSConfig *tls.Config

	// Reconnect makes the client reconnect when its connection ends for
	// any reason but Close (see the package doc, "Reconnecting"). Off, the
	// client ends with its first connection, as it always has.
	Reconnect bool
	// MaxReconnects bounds the failed attempts in a row (one attempt is one
	// dial of one address) before the client gives up; 0 means 60,
	// negative never gives up.
	MaxReconnects int
	// ReconnectWait is the backoff of the first attempt: it waits a random
	// duration in [0, ReconnectWait]; every further attempt doubles the
	// bound, up to MaxReconnectWait. Defaults 250ms and 30s.
	ReconnectWait    time.Duration
	MaxReconnectWait time.Duration
	// OnDisconnect is called when an established connection ends and the
	// client will reconnect, with the reason. OnReconnect is called with
	// the address once the client is connected and resubscribed again.
	// Both run on a goroutine of their own, in order; they may call any
	// method of the client, Close included.
	OnDisconnect func(err error)
	OnReconnect  func(url string)
	// PingInterval is the keepalive: the client sends a WebSocket ping
	// this often and drops a connection that answered nothing for one
	// interval. 0 means half the server's heartbeat interval (at most
	// 15s) with Reconnect and no keepalive without; negative turns it off.
	PingInterval time.Duration
}

// Message is one delivered message.
type Message struct {
	Subject   string
	Data      []byte
	Text      bool // Data was published as text
	Headers   map[string]string
	TraceID   string
	Timestamp time.Time
}

// conn is one WebSocket connection of a Client.
type conn struct {
	nc      net.Conn
	br      *bufio.Reader
	url     string
	welcome *pb.Welcome

	wmu  sync.Mutex // serializes writes
	wbuf []byte
	// writeTimeout, when set, bounds each write (with the keepalive: a
	// write blocked that long ends the connection).
	writeTimeout time.Duration

	pending map[uint64]pendingReq // guarded by Client.mu; nil once dead

	reads   atomic.Uint64 // frames read, for the keepalive
	blocked atomic.Bool   // the reader waits on a full subscription channel
	stale   atomic.Bool   // the keepalive dropped it
	dead    chan struct{} // closed by shut
	once    sync.Once
}

// shut closes cn's socket and ends its keepalive.
func (cn *conn) shut() {
	cn.once.Do(func() {
		cn.nc.Close()
		close(cn.dead)
	})
}

type pendingReq struct {
	ch  chan reply
	sub *Subscription // a subscription the ACK makes live
}

type reply struct {
	f   *pb.ServerFrame
	err error
}

// Client is a connection to the bus (with Options.Reconnect, a sequence of
// them). Safe for concurrent use.
type Client struct {
	opts    Options
	servers []string // the address list, in the order of attempts
	nextID  atomic.Uint64

	closed  atomic.Bool
	ctx     context.Context // ends with Close
	cancel  context.CancelFunc
	closeCh <-chan struct{} // ctx.Done()
	done    chan struct{}   // closed when the client ends
	cbq     *callbacks      // OnDisconnect and OnReconnect, in order; nil without

	mu      sync.Mutex
	cur     *conn         // the connection in use; nil while disconnected
	live    net.Conn      // the reader's connection, also while it resubscribes
	up      chan struct{} // closed while connected
	welcome *pb.Welcome
	subs    map[*Subscription]struct{}
	err     error
	index   int // servers[index] is the current or last address
}

// Subscription receives the messages matching its pattern.
type Subscription struct {
	Pattern string
	// C delivers messages in order; it is closed when the subscription ends.
	C chan *Message
	// Presence, for a subscription made with SubscribePresence, delivers
	// the room's joins (this connection's own included) and leaves in
	// order; it is closed when the subscription ends. Nil otherwise. Like
	// C, a full channel stops the reader; read both or neither.
	Presence chan *PresenceEvent
	c        *Client
	tokens   []string
	info     []byte
	live     bool   // acknowledged by the server: restored after a reconnect (guarded by c.mu)
	seq      uint64 // the id of that ACK: the latest presence info wins (guarded by c.mu)
	once     sync.Once
	quit     chan struct{} // closed when the subscription ends
	dmu      sync.Mutex    // held while delivering; ended is set under it
	ended    bool
}

// close ends s: a delivery waiting on a full channel gives up, then the
// channels are closed (never while a delivery is sending on them).
func (s *Subscription) close() {
	s.once.Do(func() {
		close(s.quit)
		s.dmu.Lock()
		s.ended = true
		close(s.C)
		if s.Presence != nil {
			close(s.Presence)
		}
		s.dmu.Unlock()
	})
}

// Dial connects to one of the addresses, upgrades and waits for WELCOME.
// With several addresses it tries each once, in order (shuffled unless
// NoRandomize), and returns the errors of all when none answers; a 401
// or 403 ends it at once.
func Dial(ctx context.Context, o Options) (*Client, error) {
	o = withDefaults(o)
	c := &Client{
		opts:    o,
		servers: serverList(o),
		subs:    make(map[*Subscription]struct{}),
		done:    make(chan struct{}),
		up:      make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.closeCh = c.ctx.Done()
	var errs []error
	for i, u := range c.servers {
		cn, err := c.connect(ctx, u)
		if err == nil {
			c.index = i
			c.mu.Lock()
			c.live = cn.nc
			c.mu.Unlock()
			_ = c.install(cn, nil, nil)
			if o.OnDisconnect != nil || o.OnReconnect != nil {
				c.cbq = newCallbacks()
			}
			c.startKeepalive(cn)
			go c.run(cn)
			return c, nil
		}
		if len(c.servers) == 1 || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrForbidden) || ctx.Err() != nil {
			c.cancel()
			return nil, err
		}
		errs = append(errs, err)
	}
	c.cancel()
	return nil, errors.Join(errs...)
}

func withDefaults(o Options) Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	if o.MaxReconnects == 0 {
		o.MaxReconnects = 60
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	if o.MaxReconnectWait <= 0 {
		o.MaxReconnectWait = 30 * time.Second
	}
	if o.MaxReconnectWait < o.ReconnectWait {
		o.MaxReconnectWait = o.ReconnectWait
	}
	return o
}

// connect gets a token and dials u.
func (c *Client) connect(ctx context.Context, u string) (*conn, error) {
	tok := c.opts.Token
	if c.opts.TokenFunc != nil {
		tctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
		t, err := c.opts.TokenFunc(tctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("client: token: %w", err)
		}
		tok = t
	}
	cn, err := dialConn(ctx, c.opts, u, tok)
	if err != nil {
		return nil, err
	}
	if iv := c.pingInterval(cn); iv > 0 {
		cn.writeTimeout = max(2*iv, c.opts.DialTimeout)
	}
	return cn, nil
}

// dialConn connects to u, upgrades and waits for WELCOME.
func dialConn(ctx context.Context, o Options, u, token string) (*conn, error) {
	addr := u
	d := ws.Dialer{Timeout: o.DialTimeout, TLSConfig: o.TLSConfig}
	if o.Codec == JSON {
		d.Protocols = []string{"arqon.v1.json"}
	} else {
		d.Protocols = []string{"arqon.v1.proto"}
	}
	if token != "" {
		if o.TokenInQuery {
			sep := "?"
			if strings.Contains(addr, "?") {
				sep = "&"
			}
			addr += sep + "token=" + token
		} else {
			d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token}})
		}
	}
	if o.LocalAddr != nil {
		nd := &net.Dialer{Timeout: o.DialTimeout, LocalAddr: o.LocalAddr}
		d.NetDial = nd.DialContext
	}
	var reason string
	d.OnStatusError = func(status int, r []byte, resp io.Reader) {
		b, _ := io.ReadAll(io.LimitReader(resp, 512))
		reason = strings.TrimSpace(string(b))
	}
	dctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	defer cancel()
	nc, br, _, err := d.Dial(dctx, addr)
	if err != nil {
		var se ws.StatusError
		if errors.As(err, &se) && (int(se) == http.StatusUnauthorized || int(se) == http.StatusForbidden) {
			base := ErrUnauthorized
			if int(se) == http.StatusForbidden {
				base = ErrForbidden
			}
			if reason != "" {
				return nil, fmt.Errorf("%w: %s", base, lastLine(reason))
			}
			return nil, base
		}
		return nil, fmt.Errorf("client: dial %s: %w", u, err)
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	cn := &conn{nc: nc, br: br, url: u, pending: make(map[uint64]pendingReq), dead: make(chan struct{})}
	_ = nc.SetReadDeadline(time.Now().Add(o.DialTimeout))
	f, err := cn.readFrame()
	_ = nc.SetReadDeadline(time.Time{})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("client: reading WELCOME from %s: %w", u, err)
	}
	if f.Op != pb.Op_OP_WELCOME || f.Welcome == nil {
		nc.Close()
		return nil, ErrNoWelcome
	}
	cn.welcome = f.Welcome
	return cn, nil
}

func lastLine(s string) string {
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}

// Welcome returns the WELCOME of the current connection (after a
// reconnect, the new one's: a new session id and node).
func (c *Client) Welcome() *pb.Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome
}

// ConnectedURL returns the address of the current connection, or "" while
// disconnected.
func (c *Client) ConnectedURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return ""
	}
	return c.cur.url
}

// WaitConnected returns nil once the client is connected (at once if it
// is), or ErrClosed when the client ends first, or ctx's error.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	up := c.up
	c.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-c.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the client ends: it was closed, its connection ended
// (without Reconnect), or it gave up reconnecting. Err then tells why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client ended, or nil while it has not (also while it
// is reconnecting).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// readFrame reads one whole server message (control frames answered).
func (cn *conn) readFrame() (*pb.ServerFrame, error) {
	var msg []byte
	var msgOp ws.OpCode
	for {
		h, err := ws.ReadHeader(cn.br)
		if err != nil {
			return nil, err
		}
		if h.Length > 64<<20 {
			return nil, errors.New("client: frame too large")
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(cn.br, p); err != nil {
			return nil, err
		}
		cn.reads.Add(1)
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = cn.writeFrame(ws.OpPong, p)
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			_ = cn.writeFrame(ws.OpClose, p)
			return nil, &CloseError{Code: int(code), Reason: reason}
		case ws.OpContinuation:
			msg = append(msg, p...)
		default:
			msg, msgOp = p, h.OpCode
		}
		if !h.Fin {
			continue
		}
		f := &pb.ServerFrame{}
		if msgOp == ws.OpText {
			var parser fastjson.Parser
			if err := pb.DecodeServerJSON(&parser, msg, f); err != nil {
				return nil, fmt.Errorf("client: bad JSON frame: %w", err)
			}
		} else if err := f.UnmarshalVT(msg); err != nil {
			return nil, fmt.Errorf("client: bad Protobuf frame: %w", err)
		}
		return f, nil
	}
}

// CloseError is the server's close frame.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("client: closed by server: %d %s", e.Code, e.Reason)
}

// readLoop reads cn until it ends and returns why.
func (c *Client) readLoop(cn *conn) error {
	for {
		f, err := cn.readFrame()
		if err != nil {
			return err
		}
		c.handle(cn, f)
	}
}

// handle processes one frame read from cn.
func (c *Client) handle(cn *conn, f *pb.ServerFrame) {
	switch f.Op {
	case pb.Op_OP_MSG:
		c.dispatch(cn, f)
	case pb.Op_OP_PRESENCE_UPDATE, pb.Op_OP_PRESENCE_LEAVE:
		c.dispatchPresence(cn, f)
	case pb.Op_OP_ACK, pb.Op_OP_PONG, pb.Op_OP_ERROR, pb.Op_OP_PRESENCE:
		c.mu.Lock()
		p, ok := cn.pending[f.Id]
		if ok {
			delete(cn.pending, f.Id)
			if p.sub != nil && f.Op == pb.Op_OP_ACK {
				p.sub.live, p.sub.seq = true, f.Id
			}
		}
		c.mu.Unlock()
		if ok {
			p.ch <- reply{f: f}
		} else if f.Op == pb.Op_OP_ERROR && c.opts.OnError != nil {
			c.opts.OnError(&ServerError{Code: pb.CodeName(f.Error.GetCode()), Message: f.Error.GetMessage()})
		}
	}
}

func (c *Client) dispatch(cn *conn, f *pb.ServerFrame) {
	m := &Message{Subject: f.Subject, Data: f.Data, Text: f.Text, TraceID: f.TraceId}
	if f.Timestamp != 0 {
		m.Timestamp = time.Unix(0, f.Timestamp)
	}
	if len(f.Headers) > 0 {
		m.Headers = make(map[string]string, len(f.Headers))
		for _, h := range f.Headers {
			m.Headers[h.Key] = h.Value
		}
	}
	tokens := strings.Split(f.Subject, ".")
	c.mu.Lock()
	var targets []target
	for s := range c.subs {
		if matchTokens(s.tokens, tokens) {
			targets = append(targets, target{s, s.live})
		}
	}
	c.mu.Unlock()
	for _, tg := range targets {
		s := tg.s
		if !deliver(c, cn, s, s.C, m, tg.live) {
			return
		}
	}
}

// target is a subscription a frame goes to, and whether the server had
// acknowledged it when the frame was matched.
type target struct {
	s    *Subscription
	live bool
}

// deliver sends v on ch, a channel of s, unless s has ended; it waits
// while ch is full and returns false when the client is closed meanwhile.
// For a subscription the server has not acknowledged yet (live false: its
// Subscribe has not returned, so nobody can be reading ch) it never waits:
// what arrives before the ACK beyond the channel's room is dropped, or the
// reader would stop before the ACK it waits for.
func deliver[T any](c *Client, cn *conn, s *Subscription, ch chan T, v T, live bool) bool {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if s.ended {
		return true
	}
	select {
	case ch <- v:
		return true
	default:
	}
	if !live {
		return true
	}
	cn.blocked.Store(true) // a full channel: not the connection's fault
	defer cn.blocked.Store(false)
	select {
	case ch <- v:
		return true
	case <-s.quit:
		return true
	case <-c.closeCh:
		return false
	}
}

// matchTokens applies NATS wildcard rules.
func matchTokens(pattern, subject []string) bool {
	for i, p := range pattern {
		if p == ">" {
			return len(subject) > i
		}
		if i >= len(subject) || (p != "*" && p != subject[i]) {
			return false
		}
	}
	return len(pattern) == len(subject)
}

func (cn *conn) writeFrame(op ws.OpCode, payload []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.writeFrameLocked(op, payload)
}

func (cn *conn) writeFrameLocked(op ws.OpCode, payload []byte) error {
	mask := ws.NewMask()
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: mask, Length: int64(len(payload))}
	buf := cn.wbuf[:0]
	hb := make([]byte, 0, ws.MaxHeaderSize)
	w := byteWriter{b: hb}
	if err := ws.WriteHeader(&w, h); err != nil {
		return err
	}
	buf = append(buf, w.b...)
	start := len(buf)
	buf = append(buf, payload...)
	ws.Cipher(buf[start:], mask, 0)
	cn.wbuf = buf
	if cn.writeTimeout > 0 {
		_ = cn.nc.SetWriteDeadline(time.Now().Add(cn.writeTimeout))
	}
	_, err := cn.nc.Write(buf)
	if err != nil {
		// A partial frame leaves the stream unusable: end the connection
		// (the reader then sees it and, with Reconnect, reconnects).
		cn.nc.Close()
	}
	return err
}

type byteWriter struct{ b []byte }

func (w *byteWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// encode writes f in the codec to cn.
func (cn *conn) send(f *pb.ClientFrame, codec Codec) error {
	if codec == JSON {
		return cn.writeFrame(ws.OpText, pb.AppendClientJSON(nil, f))
	}
	b, err := f.MarshalVT()
	if err != nil {
		return err
	}
	return cn.writeFrame(ws.OpBinary, b)
}

// current returns the connection in use, or the error to return for an
// operation without one.
func (c *Client) current() (*conn, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		if c.err != nil {
			return nil, ErrClosed
		}
		return nil, ErrDisconnected
	}
	return c.cur, nil
}

// send encodes f in the connection's codec and writes it.
func (c *Client) send(f *pb.ClientFrame) error {
	cn, err := c.current()
	if err != nil {
		return err
	}
	if err := cn.send(f, c.opts.Codec); err != nil {
		return c.writeErr(err)
	}
	return nil
}

// writeErr is the error of a failed write: the connection is gone.
func (c *Client) writeErr(err error) error {
	if c.closed.Load() || !c.opts.Reconnect {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("%w: %w", ErrDisconnected, err)
}

// request sends f with a fresh id and waits for its ACK/PONG or ERROR.
func (c *Client) request(ctx context.Context, f *pb.ClientFrame) error {
	_, err := c.roundTrip(ctx, f, nil)
	return err
}

// roundTrip sends f with a fresh id and returns the reply with that id; an
// ERROR reply is returned as a *ServerError. An ACK makes sub, if not nil,
// live.
func (c *Client) roundTrip(ctx context.Context, f *pb.ClientFrame, sub *Subscription) (*pb.ServerFrame, error) {
	f.Id = c.nextID.Add(1)
	ch := make(chan reply, 1)
	if c.closed.Load() {
		return nil, ErrClosed
	}
	c.mu.Lock()
	cn := c.cur
	if cn == nil {
		err := ErrDisconnected
		if c.err != nil {
			err = ErrClosed
		}
		c.mu.Unlock()
		return nil, err
	}
	cn.pending[f.Id] = pendingReq{ch: ch, sub: sub}
	c.mu.Unlock()
	if err := cn.send(f, c.opts.Codec); err != nil {
		c.mu.Lock()
		if cn.pending != nil {
			delete(cn.pending, f.Id)
		}
		c.mu.Unlock()
		return nil, c.writeErr(err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.f.Op == pb.Op_OP_ERROR {
			return nil, &ServerError{Code: pb.CodeName(r.f.Error.GetCode()), Message: r.f.Error.GetMessage()}
		}
		return r.f, nil
	case <-ctx.Done():
		c.mu.Lock()
		if cn.pending != nil {
			delete(cn.pending, f.Id)
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// Subscribe subscribes to pattern and waits for the server's ACK.
func (c *Client) Subscribe(ctx context.Context, pattern string) (*Subscription, error) {
	return c.subscribe(ctx, &pb.ClientFrame{Op: pb.Op_OP_SUB, Subject: pattern})
}

// SubscribePresence subscribes to the literal subject as a presence member
// of that room and waits for the server's ACK. info, if not empty, is a JSON
// object (at most 256 bytes) that other members see with this member. The
// subscription delivers the room's messages on C and its joins and leaves
// on Presence; the first event is usually this connection's own join.
// Unsubscribe leaves the room. After a reconnect the client joins again
// with the same info, as a new session.
func (c *Client) SubscribePresence(ctx context.Context, subject string, info []byte) (*Subscription, error) {
	if len(info) > 0 && !pb.IsJSONObject(info) {
		return nil, ErrPresenceInfo
	}
	return c.subscribe(ctx, &pb.ClientFrame{Op: pb.Op_OP_SUB, Subject: subject, Presence: true, Info: info})
}

func (c *Client) subscribe(ctx context.Context, f *pb.ClientFrame) (*Subscription, error) {
	s := &Subscription{Pattern: f.Subject, C: make(chan *Message, c.opts.Buffer), c: c, tokens: strings.Split(f.Subject, "."), quit: make(chan struct{})}
	if f.Presence {
		s.Presence = make(chan *PresenceEvent, c.opts.Buffer)
		s.info = append([]byte(nil), f.Info...)
	}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	if _, err := c.roundTrip(ctx, f, s); err != nil {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
		return nil, err
	}
	return s, nil
}

// Unsubscribe ends the subscription and closes s.C (and s.Presence). The
// server's subscription ends with the last local one of the same pattern;
// the presence membership with the last presence one (the connection then
// stays subscribed without presence if a plain subscription remains).
// While the client is disconnected it only ends the subscription locally
// (the next connection does not restore it) and returns nil; so does it
// for a subscription that has ended already.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
	if _, ok := c.subs[s]; !ok { // ended already (Unsubscribe, a refused resubscription, the client's end)
		c.mu.Unlock()
		s.close()
		return nil
	}
	delete(c.subs, s)
	shared, presence := false, false
	for o := range c.subs {
		if o.Pattern == s.Pattern {
			shared = true
			presence = presence || o.Presence != nil
		}
	}
	c.mu.Unlock()
	s.close()
	if shared && (s.Presence == nil || presence) { // another local subscription still needs the server's
		return nil
	}
	err := c.request(ctx, &pb.ClientFrame{Op: pb.Op_OP_UNSUB, Subject: s.Pattern})
	if err == nil && shared {
		// Leave the room but keep the plain subscriptions' messages coming.
		err = c.request(ctx, &pb.ClientFrame{Op: pb.Op_OP_SUB, Subject: s.Pattern})
	}
	if errors.Is(err, ErrDisconnected) {
		return nil // the connection that had it is gone; a new one restores only what is left
	}
	return err
}

// PublishOptions are optional settings for one publish.
type PublishOptions struct {
	Headers map[string]string
	// Text marks data as UTF-8 text (JSON subscribers get it in "data"
	// rather than "data_b64"). The JSON codec sends valid UTF-8 as text.
	Text bool
}

// Publish sends data to subject without waiting. While the client is
// disconnected it returns ErrDisconnected at once (nothing is buffered).
func (c *Client) Publish(ctx context.Context, subject string, data []byte) error {
	return c.PublishWith(ctx, subject, data, PublishOptions{Text: c.opts.Codec == JSON})
}

// PublishWith sends data to subject with options, without waiting.
func (c *Client) PublishWith(_ context.Context, subject string, data []byte, o PublishOptions) error {
	return c.send(pubFrame(subject, data, o, c.opts.Codec))
}

// PublishAck sends data and waits until the server has accepted and routed it.
func (c *Client) PublishAck(ctx context.Context, subject string, data []byte, o PublishOptions) error {
	f := pubFrame(subject, data, o, c.opts.Codec)
	f.Ack = true
	return c.request(ctx, f)
}

func pubFrame(subject string, data []byte, o PublishOptions, codec Codec) *pb.ClientFrame {
	f := &pb.ClientFrame{Op: pb.Op_OP_PUB, Subject: subject, Data: data, Text: o.Text || (codec == JSON && utf8.Valid(data))}
	for k, v := range o.Headers {
		f.Headers = append(f.Headers, &pb.Header{Key: k, Value: v})
	}
	return f
}

// Ping sends a protocol ping and waits for the pong.
func (c *Client) Ping(ctx context.Context) error {
	return c.request(ctx, &pb.ClientFrame{Op: pb.Op_OP_PING})
}

// Close sends a normal close frame, closes the connection and stops
// reconnecting. Pending requests fail with ErrClosed and the
// subscriptions' channels are closed.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		<-c.done
		return nil
	}
	c.cancel()
	c.mu.Lock()
	cn, live := c.cur, c.live
	c.mu.Unlock()
	if cn == nil {
		// Reconnecting: the wait and the dial see closeCh; a connection
		// being resubscribed is dropped.
		if live != nil {
			live.Close()
		}
		<-c.done
		return nil
	}
	cn.wmu.Lock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_ = cn.writeFrameLocked(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	cn.wmu.Unlock()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		cn.nc.Close()
		<-c.done
	}
	return nil
}
