package client

// The life of a Client: one goroutine (run) reads its connection and, with
// Options.Reconnect, dials the next one when it ends, subscribes the live
// subscriptions again and reads on; a keepalive goroutine per connection
// pings it; one goroutine runs OnDisconnect and OnReconnect in order.

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/pb"
)

// errStale: the keepalive found the connection silent.
var errStale = errors.New("client: connection silent (no answer to ping)")

// serverList is the address list of o: URL and URLs without repeats,
// shuffled unless NoRandomize.
func serverList(o Options) []string {
	var list []string
	seen := map[string]bool{}
	for _, u := range append([]string{o.URL}, o.URLs...) {
		if u != "" && !seen[u] {
			seen[u] = true
			list = append(list, u)
		}
	}
	if len(list) == 0 {
		return []string{"ws://127.0.0.1:8080/v1/socket"}
	}
	if !o.NoRandomize {
		rand.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	}
	return list
}

// backoff is the wait before reconnect attempt n (from 0): exponential
// backoff with full jitter, a random duration in
// [0, min(maxWait, wait·2ⁿ)].
func backoff(n int, wait, maxWait time.Duration) time.Duration {
	d := wait
	for i := 0; i < n && d < maxWait; i++ {
		if d > maxWait/2 {
			d = maxWait
			break
		}
		d *= 2
	}
	d = min(d, maxWait)
	if d <= 0 {
		return 0
	}
	if d < math.MaxInt64 {
		d++ // d itself included
	}
	return rand.N(d)
}

// pingInterval is the keepalive interval of cn, 0 for none.
func (c *Client) pingInterval(cn *conn) time.Duration {
	iv := c.opts.PingInterval
	if iv < 0 || (iv == 0 && !c.opts.Reconnect) {
		return 0
	}
	if iv == 0 {
		iv = 15 * time.Second
		if hb := time.Duration(cn.welcome.GetHeartbeatIntervalMs()) * time.Millisecond; hb > 0 {
			iv = min(iv, max(hb/2, time.Second))
		}
	}
	return iv
}

// run reads the client's connections until the client ends.
func (c *Client) run(cn *conn) {
	for {
		err := c.readLoop(cn)
		cn.shut()
		if cn.stale.Load() {
			err = errStale
		}
		retry := c.opts.Reconnect && !c.closed.Load() && c.retryable(err)
		if !retry {
			if c.closed.Load() {
				err = ErrClosed
			}
			c.detach(cn, err, nil)
			c.finish()
			return
		}
		c.detach(cn, nil, err)
		callbackOf(c, c.opts.OnDisconnect, err)
		cn, err = c.reconnect(err)
		if cn == nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.finish()
			return
		}
		callbackOf(c, c.opts.OnReconnect, cn.url)
	}
}

// retryable reports whether the end of a connection with err may be
// followed by a new one: not a "token expired" close without a TokenFunc
// (the same token would be refused).
func (c *Client) retryable(err error) bool {
	var ce *CloseError
	if errors.As(err, &ce) && ce.Code == int(ws.StatusPolicyViolation) && strings.Contains(ce.Reason, "token expired") {
		return c.opts.TokenFunc != nil
	}
	return true
}

// detach takes cn out of use and fails its pending requests: with
// ErrClosed when final (the client's error) is set, else ErrDisconnected
// and the cause.
func (c *Client) detach(cn *conn, final, cause error) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		c.up = make(chan struct{})
	}
	c.live = nil
	if final != nil {
		c.err = final
	}
	pend := cn.pending
	cn.pending = nil
	c.mu.Unlock()
	perr := ErrClosed
	if final == nil {
		perr = fmt.Errorf("%w: %w", ErrDisconnected, cause)
	}
	for _, p := range pend {
		p.ch <- reply{err: perr}
	}
}

// finish ends the client: its subscriptions, callbacks and Done.
func (c *Client) finish() {
	c.mu.Lock()
	subs := c.subs
	c.subs = map[*Subscription]struct{}{}
	c.mu.Unlock()
	for s := range subs {
		s.close()
	}
	if c.cbq != nil {
		c.cbq.stop()
	}
	c.cancel()
	close(c.done)
}

// reconnect dials the addresses in turn, with backoff, until one is
// connected and resubscribed; nil and the reason when it gives up.
func (c *Client) reconnect(cause error) (*conn, error) {
	last := cause
	n := 0
	for ; c.opts.MaxReconnects < 0 || n < c.opts.MaxReconnects; n++ {
		t := time.NewTimer(backoff(n, c.opts.ReconnectWait, c.opts.MaxReconnectWait))
		select {
		case <-t.C:
		case <-c.closeCh:
			t.Stop()
			return nil, ErrClosed
		}
		c.mu.Lock()
		c.index = (c.index + 1) % len(c.servers)
		u := c.servers[c.index]
		c.mu.Unlock()
		cn, err := c.connect(c.ctx, u)
		if err == nil {
			c.startKeepalive(cn) // also while resubscribing
			if err = c.restore(cn); err == nil {
				return cn, nil
			}
			cn.shut()
		}
		if c.closed.Load() {
			return nil, ErrClosed
		}
		last = err
		if c.opts.TokenFunc == nil && (errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrForbidden)) {
			return nil, err // the same token again would be refused again
		}
	}
	return nil, fmt.Errorf("%w after %d attempts: %w", ErrReconnectFailed, n, last)
}

// want is what the server must hold for one pattern.
type want struct {
	presence bool
	info     []byte
	seq      uint64
}

// wanted is the subscriptions the server must hold for the live local
// ones: one per pattern, a presence one with the info of the latest
// presence subscription when there is one. c.mu is held.
func (c *Client) wanted() map[string]*want {
	m := make(map[string]*want)
	for s := range c.subs {
		if !s.live {
			continue
		}
		w := m[s.Pattern]
		if w == nil {
			w = &want{}
			m[s.Pattern] = w
		}
		if s.Presence != nil && (!w.presence || s.seq > w.seq) {
			w.presence, w.info, w.seq = true, s.info, s.seq
		}
	}
	return m
}

// restore subscribes cn, a new connection, to what the live subscriptions
// need, waits for the answers (delivering what arrives meanwhile) and puts
// cn in use.
func (c *Client) restore(cn *conn) error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return ErrClosed
	}
	c.live = cn.nc // Close drops it
	sent := c.wanted()
	c.mu.Unlock()
	ids := make(map[uint64]string, len(sent))
	for pattern, w := range sent {
		id := c.nextID.Add(1)
		ids[id] = pattern
		f := &pb.ClientFrame{Op: pb.Op_OP_SUB, Id: id, Subject: pattern, Presence: w.presence, Info: w.info}
		if err := cn.send(f, c.opts.Codec); err != nil {
			return fmt.Errorf("client: resubscribing: %w", err)
		}
	}
	// The answers may take a while (a node's first subscriber of a pattern
	// waits for the other nodes to know): the keepalive watches the
	// connection meanwhile, the deadline only guards without one.
	wait := max(c.opts.DialTimeout, 30*time.Second)
	refused := map[string]*ServerError{}
	for len(ids) > 0 {
		_ = cn.nc.SetReadDeadline(time.Now().Add(wait))
		f, err := cn.readFrame()
		if err != nil {
			return fmt.Errorf("client: resubscribing: %w", err)
		}
		if pattern, ok := ids[f.Id]; ok && (f.Op == pb.Op_OP_ACK || f.Op == pb.Op_OP_ERROR) {
			delete(ids, f.Id)
			if f.Op == pb.Op_OP_ERROR {
				refused[pattern] = &ServerError{Code: pb.CodeName(f.Error.GetCode()), Message: f.Error.GetMessage()}
			}
			continue
		}
		c.handle(cn, f)
	}
	_ = cn.nc.SetReadDeadline(time.Time{})
	return c.install(cn, sent, refused)
}

// install puts cn in use. sent is what restore subscribed on it: what was
// unsubscribed meanwhile is unsubscribed now, before any other frame;
// subscriptions whose pattern the server refused end (OnError tells why).
func (c *Client) install(cn *conn, sent map[string]*want, refused map[string]*ServerError) error {
	c.mu.Lock()
	if c.closed.Load() {
		c.live = nil
		c.mu.Unlock()
		return ErrClosed
	}
	var ended []*Subscription
	for s := range c.subs {
		if refused[s.Pattern] != nil && s.live {
			delete(c.subs, s)
			ended = append(ended, s)
		}
	}
	now := c.wanted()
	var fix []*pb.ClientFrame
	for pattern, w := range sent {
		if refused[pattern] != nil {
			continue
		}
		n := now[pattern]
		if n == nil || (w.presence && !n.presence) {
			fix = append(fix, &pb.ClientFrame{Op: pb.Op_OP_UNSUB, Id: c.nextID.Add(1), Subject: pattern})
		}
		if n != nil && w.presence && !n.presence {
			fix = append(fix, &pb.ClientFrame{Op: pb.Op_OP_SUB, Id: c.nextID.Add(1), Subject: pattern})
		}
	}
	var err error
	for _, f := range fix { // written before anything else can be: c.cur is not set yet
		if err = cn.send(f, c.opts.Codec); err != nil {
			break
		}
	}
	if err == nil {
		c.cur = cn
		c.welcome = cn.welcome
		close(c.up)
	}
	c.mu.Unlock()
	for _, s := range ended {
		s.close()
		if c.opts.OnError != nil {
			c.opts.OnError(refused[s.Pattern])
		}
	}
	if err != nil {
		return fmt.Errorf("client: resubscribing: %w", err)
	}
	return nil
}

// startKeepalive starts cn's keepalive, if there is one.
func (c *Client) startKeepalive(cn *conn) {
	if iv := c.pingInterval(cn); iv > 0 {
		go c.keepalive(cn, iv)
	}
}

// keepalive pings cn every iv and drops it when nothing at all arrived in
// the interval after a ping (not counting time the reader spent waiting on
// a full subscription channel).
func (c *Client) keepalive(cn *conn, iv time.Duration) {
	t := time.NewTicker(iv)
	defer t.Stop()
	last, pinged := cn.reads.Load(), false
	for {
		select {
		case <-cn.dead:
			return
		case <-t.C:
		}
		n := cn.reads.Load()
		if cn.blocked.Load() {
			last, pinged = n, false
			continue
		}
		if pinged && n == last {
			cn.stale.Store(true)
			cn.nc.Close()
			return
		}
		last = n
		if cn.writeFrame(ws.OpPing, nil) != nil {
			return
		}
		pinged = true
	}
}

// callbacks runs queued functions in order on one goroutine (so that a
// callback may block or call Close without stopping the reader).
type callbacks struct {
	mu   sync.Mutex
	q    []func()
	wake chan struct{}
	done bool
}

func newCallbacks() *callbacks {
	cb := &callbacks{wake: make(chan struct{}, 1)}
	go cb.run()
	return cb
}

func (cb *callbacks) run() {
	for {
		cb.mu.Lock()
		if len(cb.q) == 0 {
			done := cb.done
			cb.mu.Unlock()
			if done {
				return
			}
			<-cb.wake
			continue
		}
		f := cb.q[0]
		cb.q[0] = nil
		cb.q = cb.q[1:]
		cb.mu.Unlock()
		f()
	}
}

func (cb *callbacks) push(f func()) {
	cb.mu.Lock()
	cb.q = append(cb.q, f)
	cb.mu.Unlock()
	select {
	case cb.wake <- struct{}{}:
	default:
	}
}

// stop lets the goroutine end once the queue is empty.
func (cb *callbacks) stop() {
	cb.mu.Lock()
	cb.done = true
	cb.mu.Unlock()
	select {
	case cb.wake <- struct{}{}:
	default:
	}
}

// callback queues fn(arg) when fn is set.
func callbackOf[T any](c *Client, fn func(T), arg T) {
	if fn == nil || c.cbq == nil {
		return
	}
	c.cbq.push(func() { fn(arg) })
}
