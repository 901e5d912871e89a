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
	// URL of the socket endpoint; default "ws://127.0.0.1:8080/v1/socket".
	URL string
	// Token is the JWT, sent as "Authorization: Bearer".
	Token string
	// TokenInQuery sends the token as the "token" query parameter instead
	// (as browsers must).
	TokenInQuery bool
	// Codec for this connection; default Protobuf.
	Codec Codec
	// DialTimeout bounds the TCP connect and upgrade; default 10s.
	DialTimeout time.Duration
	// LocalAddr, when set, is the local address to dial from (to spread
	// many connections over several loopback source addresses).
	LocalAddr net.Addr
	// Buffer is the capacity of each subscription's channel; default 1024.
	// A full channel blocks the reader: the server then sees a slow consumer.
	Buffer int
	// OnError receives ERROR frames that answer no request (e.g.
	// SLOW_CONSUMER); nil ignores them.
	OnError func(*ServerError)
	// TLSConfig for wss:// URLs (e.g. RootCAs of a private CA); nil uses
	// the system's roots.
	TLSConfig *tls.Config
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

// Client is one connection. Safe for concurrent use.
type Client struct {
	opts    Options
	conn    net.Conn
	br      *bufio.Reader
	welcome *pb.Welcome

	wmu    sync.Mutex // serializes writes
	wbuf   []byte
	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]chan *pb.ServerFrame
	subs    map[*Subscription]struct{}
	err     error
	done    chan struct{}
	closed  atomic.Bool
	closeCh chan struct{}
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
	once     sync.Once
}

func (s *Subscription) close() {
	s.once.Do(func() {
		close(s.C)
		if s.Presence != nil {
			close(s.Presence)
		}
	})
}

// Dial connects, upgrades and waits for WELCOME.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.URL == "" {
		o.URL = "ws://127.0.0.1:8080/v1/socket"
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	u := o.URL
	d := ws.Dialer{Timeout: o.DialTimeout, TLSConfig: o.TLSConfig}
	if o.Codec == JSON {
		d.Protocols = []string{"arqon.v1.json"}
	} else {
		d.Protocols = []string{"arqon.v1.proto"}
	}
	if o.Token != "" {
		if o.TokenInQuery {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + "token=" + o.Token
		} else {
			d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + o.Token}})
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
	conn, br, _, err := d.Dial(dctx, u)
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
		return nil, fmt.Errorf("client: dial %s: %w", o.URL, err)
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 4096)
	}
	c := &Client{
		opts: o, conn: conn, br: br,
		pending: make(map[uint64]chan *pb.ServerFrame),
		subs:    make(map[*Subscription]struct{}),
		done:    make(chan struct{}),
		closeCh: make(chan struct{}),
	}
	_ = conn.SetReadDeadline(time.Now().Add(o.DialTimeout))
	f, err := c.readFrame()
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("client: reading WELCOME: %w", err)
	}
	if f.Op != pb.Op_OP_WELCOME || f.Welcome == nil {
		conn.Close()
		return nil, ErrNoWelcome
	}
	c.welcome = f.Welcome
	go c.readLoop()
	return c, nil
}

func lastLine(s string) string {
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}

// Welcome returns the server's WELCOME.
func (c *Client) Welcome() *pb.Welcome { return c.welcome }

// Done is closed when the connection ends; Err then tells why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// readFrame reads one whole server message (control frames answered).
func (c *Client) readFrame() (*pb.ServerFrame, error) {
	var msg []byte
	var msgOp ws.OpCode
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		if h.Length > 64<<20 {
			return nil, errors.New("client: frame too large")
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			_ = c.writeFrame(ws.OpPong, p)
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			_ = c.writeFrame(ws.OpClose, p)
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

func (c *Client) readLoop() {
	var err error
	for {
		var f *pb.ServerFrame
		f, err = c.readFrame()
		if err != nil {
			break
		}
		switch f.Op {
		case pb.Op_OP_MSG:
			c.dispatch(f)
		case pb.Op_OP_PRESENCE_UPDATE, pb.Op_OP_PRESENCE_LEAVE:
			c.dispatchPresence(f)
		case pb.Op_OP_ACK, pb.Op_OP_PONG, pb.Op_OP_ERROR, pb.Op_OP_PRESENCE:
			c.mu.Lock()
			ch := c.pending[f.Id]
			delete(c.pending, f.Id)
			c.mu.Unlock()
			if ch != nil {
				ch <- f
			} else if f.Op == pb.Op_OP_ERROR && c.opts.OnError != nil {
				c.opts.OnError(&ServerError{Code: pb.CodeName(f.Error.GetCode()), Message: f.Error.GetMessage()})
			}
		}
	}
	if c.closed.Load() {
		err = ErrClosed
	}
	c.mu.Lock()
	c.err = err
	subs := c.subs
	c.subs = map[*Subscription]struct{}{}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	for s := range subs {
		s.close()
	}
	c.conn.Close()
	close(c.done)
}

func (c *Client) dispatch(f *pb.ServerFrame) {
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
	var targets []*Subscription
	for s := range c.subs {
		if matchTokens(s.tokens, tokens) {
			targets = append(targets, s)
		}
	}
	c.mu.Unlock()
	for _, s := range targets {
		select {
		case s.C <- m:
		case <-c.closeCh:
			return
		}
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

func (c *Client) writeFrame(op ws.OpCode, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeFrameLocked(op, payload)
}

func (c *Client) writeFrameLocked(op ws.OpCode, payload []byte) error {
	mask := ws.NewMask()
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: mask, Length: int64(len(payload))}
	buf := c.wbuf[:0]
	hb := make([]byte, 0, ws.MaxHeaderSize)
	w := byteWriter{b: hb}
	if err := ws.WriteHeader(&w, h); err != nil {
		return err
	}
	buf = append(buf, w.b...)
	start := len(buf)
	buf = append(buf, payload...)
	ws.Cipher(buf[start:], mask, 0)
	c.wbuf = buf
	_, err := c.conn.Write(buf)
	return err
}

type byteWriter struct{ b []byte }

func (w *byteWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// send encodes f in the connection's codec and writes it.
func (c *Client) send(f *pb.ClientFrame) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if c.opts.Codec == JSON {
		return c.writeFrame(ws.OpText, pb.AppendClientJSON(nil, f))
	}
	b, err := f.MarshalVT()
	if err != nil {
		return err
	}
	return c.writeFrame(ws.OpBinary, b)
}

// request sends f with a fresh id and waits for its ACK/PONG or ERROR.
func (c *Client) request(ctx context.Context, f *pb.ClientFrame) error {
	_, err := c.roundTrip(ctx, f)
	return err
}

// roundTrip sends f with a fresh id and returns the reply with that id; an
// ERROR reply is returned as a *ServerError.
func (c *Client) roundTrip(ctx context.Context, f *pb.ClientFrame) (*pb.ServerFrame, error) {
	f.Id = c.nextID.Add(1)
	ch := make(chan *pb.ServerFrame, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.pending[f.Id] = ch
	c.mu.Unlock()
	if err := c.send(f); err != nil {
		c.mu.Lock()
		delete(c.pending, f.Id)
		c.mu.Unlock()
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, ErrClosed
		}
		if r.Op == pb.Op_OP_ERROR {
			return nil, &ServerError{Code: pb.CodeName(r.Error.GetCode()), Message: r.Error.GetMessage()}
		}
		return r, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, f.Id)
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
// Unsubscribe leaves the room.
func (c *Client) SubscribePresence(ctx context.Context, subject string, info []byte) (*Subscription, error) {
	if len(info) > 0 && !pb.IsJSONObject(info) {
		return nil, ErrPresenceInfo
	}
	return c.subscribe(ctx, &pb.ClientFrame{Op: pb.Op_OP_SUB, Subject: subject, Presence: true, Info: info})
}

func (c *Client) subscribe(ctx context.Context, f *pb.ClientFrame) (*Subscription, error) {
	s := &Subscription{Pattern: f.Subject, C: make(chan *Message, c.opts.Buffer), c: c, tokens: strings.Split(f.Subject, ".")}
	if f.Presence {
		s.Presence = make(chan *PresenceEvent, c.opts.Buffer)
	}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	if err := c.request(ctx, f); err != nil {
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
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
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
	if err := c.request(ctx, &pb.ClientFrame{Op: pb.Op_OP_UNSUB, Subject: s.Pattern}); err != nil || !shared {
		return err
	}
	// Leave the room but keep the plain subscriptions' messages coming.
	return c.request(ctx, &pb.ClientFrame{Op: pb.Op_OP_SUB, Subject: s.Pattern})
}

// PublishOptions are optional settings for one publish.
type PublishOptions struct {
	Headers map[string]string
	// Text marks data as UTF-8 text (JSON subscribers get it in "data"
	// rather than "data_b64"). The JSON codec sends valid UTF-8 as text.
	Text bool
}

// Publish sends data to subject without waiting.
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

// Close sends a normal close frame and closes the connection.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		<-c.done
		return nil
	}
	close(c.closeCh)
	_ = c.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		c.conn.Close()
		<-c.done
	}
	return nil
}
