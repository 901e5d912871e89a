//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arqonbus/arqonbus/pb"
)

// The lean engine: client connections as raw non-blocking sockets served
// by a few event loops (one epoll instance each, edge-triggered), instead
// of a goroutine, a net.Conn and a bufio.Reader per connection.
//
//   - Handshake: one pre-built upgrade request (token, key, subprotocol)
//     written in one write; the 101, the greeting (WELCOME, NATS INFO,
//     bare "W") and the subscription's ACK are parsed from the loop's read
//     buffer, however they arrive.
//   - Receive: one read of up to -rbuf bytes (64 KiB) per wakeup into the
//     loop's buffer consumes every frame the server batched; frames are
//     walked in place (no copy, no allocation per frame); one clock read
//     per wakeup; latency recorded for 1 message in -sample (by sequence
//     number, at every subscriber); sequence numbers checked on every
//     message.
//
// A connection belongs to one loop, which alone touches its state after
// registration. The table from file descriptor to connection is shared.

// Connection states in the lean engine.
const (
	stConnecting uint8 = iota // TCP connect in progress
	stUpgrade                 // request written, waiting for 101
	stGreeting                // waiting for WELCOME / INFO / "W"
	stNATSPong                // NATS: CONNECT+PING written, waiting for PONG
	stSubAck                  // SUB written, waiting for its ACK
	stReady                   // subscribed (or connected): receiving
	stClosed
)

// rconn is one connection of the lean engine.
type rconn struct {
	fd      int
	i       int // connection number
	state   uint8
	l       *evloop
	start   time.Time
	tUp     time.Duration // 101 received
	tWel    time.Duration // greeting received
	subject string

	rest []byte // bytes of an incomplete frame carried to the next read
	need int64  // that frame's total size, when known
	frag []byte // a fragmented message being joined

	np     natsParser
	natsFn natsHandler
	frame  *pb.ServerFrame

	seq     multiSeq
	pending int64 // deliveries since the loop last added them up

	err error // first error (handshake failure or end of a ready connection)
}

// evloop is one event loop: an epoll instance and a read buffer.
type evloop struct {
	e       *engine
	epfd    int
	buf     []byte
	now     int64 // wall clock of the current wakeup (Unix ns)
	pending []*rconn
	wbuf    []byte
	mask    uint32
}

// engine runs the event loops and the connections.
type engine struct {
	t        *target
	loops    []*evloop
	table    []atomic.Pointer[rconn] // by file descriptor
	addrs    []unix.SockaddrInet4
	reqs     [][]byte // upgrade request per URL
	accept   []byte   // "Sec-WebSocket-Accept: ..." expected in every 101
	srcs     []unix.SockaddrInet4
	hs       *handshakeStats
	subs     *subStats // nil: ignore deliveries
	sample   uint64
	pipeline bool

	wg       sync.WaitGroup           // loops
	attempts sync.WaitGroup           // handshakes in progress
	sem      chan struct{}            // handshakes in flight (nil: unbounded)
	auto     atomic.Pointer[autoRamp] // unpaced ramp driven by the loops (nil: none)
	stop     atomic.Bool
	ready    atomic.Int64

	mu    sync.Mutex
	conns []*rconn // every connection that got ready
}

// engineOpts configures newEngine.
type engineOpts struct {
	Loops  int
	RBuf   int
	Sample int // record latency for one message number in Sample
	// Pipeline sends the greeting reply and the SUB in the same write as
	// the upgrade request, instead of after the greeting.
	Pipeline bool
	HS       *handshakeStats
	Subs     *subStats
}

// wsKey is the Sec-WebSocket-Key of every upgrade (the server only
// hashes it).
const wsKey = "bG9hZGdlbi1sZWFuLWtleQ=="

// newEngine prepares the requests for t's URLs and starts the loops.
func newEngine(t *target, o engineOpts) (*engine, error) {
	e := &engine{t: t, hs: o.HS, subs: o.Subs, sample: uint64(max(o.Sample, 1)), pipeline: o.Pipeline}
	var lim unix.Rlimit
	n := 1 << 16
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < uint64(n) {
		n = int(lim.Cur) + 1
	}
	e.table = make([]atomic.Pointer[rconn], n)
	for _, u := range t.URLs {
		pu, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		ip := net.ParseIP(pu.Hostname()).To4()
		port, _ := strconv.Atoi(pu.Port())
		if ip == nil || port == 0 {
			return nil, fmt.Errorf("loadgen: lean engine needs ws://IPv4:port URLs, got %q", u)
		}
		var sa unix.SockaddrInet4
		sa.Port = port
		copy(sa.Addr[:], ip)
		e.addrs = append(e.addrs, sa)
		var proto string
		switch {
		case t.Kind == kindArqon && t.Proto:
			proto = "arqon.v1.proto"
		case t.Kind == kindArqon:
			proto = "arqon.v1.json"
		}
		e.reqs = append(e.reqs, upgradeRequest(pu, proto))
	}
	h := sha1.Sum([]byte(wsKey + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	e.accept = []byte(base64.StdEncoding.EncodeToString(h[:]))
	for _, ip := range t.SrcIPs {
		var sa unix.SockaddrInet4
		copy(sa.Addr[:], ip.To4())
		e.srcs = append(e.srcs, sa)
	}
	rb := max(o.RBuf, 4096)
	for range max(o.Loops, 1) {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			e.close()
			return nil, err
		}
		l := &evloop{e: e, epfd: fd, buf: make([]byte, rb), mask: rand.Uint32()}
		e.loops = append(e.loops, l)
	}
	for _, l := range e.loops {
		e.wg.Add(1)
		go l.run()
	}
	return e, nil
}

// upgradeRequest builds the HTTP upgrade request for u.
func upgradeRequest(u *url.URL, proto string) []byte {
	var b bytes.Buffer
	path := u.RequestURI()
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	b.WriteString("Sec-WebSocket-Key: " + wsKey + "\r\nSec-WebSocket-Version: 13\r\n")
	if proto != "" {
		b.WriteString("Sec-WebSocket-Protocol: " + proto + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// dial starts connection i (subscribing to subject unless ""): socket,
// bind to its source address, non-blocking connect, registration with a
// loop. The loop finishes the handshake; e.attempts is done then.
func (e *engine) dial(i int, subject string) {
	c := &rconn{i: i, start: time.Now(), subject: subject, fd: -1}
	e.attempts.Add(1)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		e.finish(c, err)
		return
	}
	c.fd = fd
	if fd >= len(e.table) {
		e.finish(c, unix.EMFILE)
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(e.srcs) > 0 {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		src := e.srcs[i%len(e.srcs)]
		if err := unix.Bind(fd, &src); err != nil {
			e.finish(c, err)
			return
		}
	}
	dst := e.addrs[i%len(e.addrs)]
	if err := unix.Connect(fd, &dst); err != nil && err != unix.EINPROGRESS {
		e.finish(c, err)
		return
	}
	l := e.loops[i%len(e.loops)]
	c.l = l
	e.table[fd].Store(c)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		e.table[fd].Store(nil)
		e.finish(c, err)
	}
}

// finish ends a handshake attempt: recorded as failed (err != nil, the
// socket is closed) or ready.
func (e *engine) finish(c *rconn, err error) {
	if err != nil {
		c.err = err
		c.state = stClosed
		if e.hs != nil {
			e.hs.fail(err)
		}
		if c.fd >= 0 {
			if c.fd < len(e.table) {
				e.table[c.fd].Store(nil)
			}
			abortClose(c.fd)
		}
	} else {
		if e.hs != nil {
			e.hs.Upgrade.Record(c.tUp)
			e.hs.Welcome.Record(c.tWel)
			if c.subject != "" {
				e.hs.SubAck.Record(time.Since(c.start))
			}
			e.hs.OK.Add(1)
		}
		e.ready.Add(1)
		if e.subs != nil {
			e.subs.Alive.Add(1)
		}
		e.mu.Lock()
		e.conns = append(e.conns, c)
		e.mu.Unlock()
	}
	if e.sem != nil {
		<-e.sem
	}
	if a := e.auto.Load(); a != nil {
		// The loop that finished c dials the next connection itself
		// (after its current batch of events), instead of waking a ramp
		// goroutine: no goroutine hand-off per handshake.
		a.due.Add(1)
	}
	e.attempts.Done()
}

// An autoRamp is an unpaced ramp run by the event loops: each finished
// handshake makes one more connection due, which the loop that finished it
// dials after its current batch of events.
type autoRamp struct {
	first, n int64
	next     atomic.Int64 // connections dialed
	due      atomic.Int64 // finished handshakes not yet replaced
	subject  func(int) string
	ctx      context.Context
}

// take claims the next connection number to dial; false when all are.
func (a *autoRamp) take() (int, bool) {
	if a.ctx.Err() != nil {
		return 0, false
	}
	k := a.next.Add(1) - 1
	if k >= a.n {
		return 0, false
	}
	return int(a.first + k), true
}

// dialDue dials the connections that became due, from a loop.
func (e *engine) dialDue() {
	a := e.auto.Load()
	if a == nil {
		return
	}
	for {
		d := a.due.Load()
		if d <= 0 {
			return
		}
		if !a.due.CompareAndSwap(d, d-1) {
			continue
		}
		e.dialNext(a)
	}
}

// dialNext dials the next connection of a, if any is left.
func (e *engine) dialNext(a *autoRamp) {
	i, ok := a.take()
	if !ok {
		return
	}
	subj := ""
	if a.subject != nil {
		subj = a.subject(i)
	}
	e.dial(i, subj)
}

// abortClose closes fd with a reset (SO_LINGER 0: no TIME_WAIT).
func abortClose(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	_ = unix.Close(fd)
}

// ramp opens n connections (numbers first..first+n-1) at rate per second
// (0: unpaced) with at most conc handshakes in flight, and returns when
// every attempt has finished or ctx ends.
func (e *engine) ramp(ctx context.Context, first, n int, rate float64, conc int, subject func(int) string, label string, progress time.Duration) time.Duration {
	start := time.Now()
	stopProg := progressTicker(progress, func(el time.Duration) {
		fmt.Printf("  %s: %6.1fs  ok %d  failed %d  p99 handshake %v\n", label, el.Seconds(),
			e.hs.OK.Load(), e.hs.Failed.Load(), e.hs.Welcome.Snapshot().Quantile(0.99))
	})
	defer stopProg()
	if rate <= 0 {
		return e.rampAuto(ctx, start, first, n, conc, subject)
	}
	e.sem = make(chan struct{}, max(conc, 1))
	defer func() { e.sem = nil }()
	for k := 0; k < n; k++ {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(k) / rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		subj := ""
		if subject != nil {
			subj = subject(first + k)
		}
		e.dial(first+k, subj)
	}
	e.attempts.Wait()
	return time.Since(start)
}

// rampAuto is ramp without pacing: it starts conc handshakes and the loops
// keep conc in flight (see autoRamp) until n were dialed.
func (e *engine) rampAuto(ctx context.Context, start time.Time, first, n, conc int, subject func(int) string) time.Duration {
	a := &autoRamp{first: int64(first), n: int64(n), subject: subject, ctx: ctx}
	e.attempts.Add(1) // held until every connection was dialed
	e.auto.Store(a)
	for range min(max(conc, 1), n) {
		e.dialNext(a)
	}
	// The loops dial the rest. A dial that fails at once (in this
	// goroutine or a loop's) leaves its replacement due; pick up what no
	// loop is about to take.
	for a.next.Load() < a.n && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		e.dialDue()
	}
	e.auto.Store(nil)
	e.attempts.Done()
	e.attempts.Wait()
	return time.Since(start)
}

// halt stops the event loops (connections stay open).
func (e *engine) halt() {
	e.stop.Store(true)
	e.wg.Wait()
}

// close stops the loops and resets every connection.
func (e *engine) close() {
	e.halt()
	for i := range e.table {
		if c := e.table[i].Swap(nil); c != nil {
			abortClose(c.fd)
			if c.state == stReady && e.subs != nil {
				e.subs.Alive.Add(-1)
				e.subs.count(&e.subs.ends, "local_close")
			}
		}
	}
	for _, l := range e.loops {
		_ = unix.Close(l.epfd)
	}
}

// ready returns the connections that completed their handshake.
func (e *engine) readyConns() []*rconn {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*rconn(nil), e.conns...)
}

// run is the event loop.
func (l *evloop) run() {
	defer l.e.wg.Done()
	e := l.e
	events := make([]unix.EpollEvent, 512)
	lastSweep := time.Now()
	for !e.stop.Load() {
		n, err := unix.EpollWait(l.epfd, events, 50)
		if err != nil && err != unix.EINTR {
			fmt.Println("loadgen: epoll_wait:", err)
			return
		}
		if n > 0 {
			l.now = time.Now().UnixNano()
		}
		var delivered int64
		for k := 0; k < n; k++ {
			ev := &events[k]
			fd := int(ev.Fd)
			if fd < 0 || fd >= len(e.table) {
				continue
			}
			c := e.table[fd].Load()
			if c == nil || c.l != l {
				continue
			}
			l.event(c, ev.Events)
			delivered += c.pending
			c.pending = 0
		}
		if delivered > 0 && e.subs != nil {
			e.subs.Delivered.Add(delivered)
			e.subs.LastRecv.Store(l.now)
		}
		e.dialDue()
		if len(l.pending) > 0 && time.Since(lastSweep) > 100*time.Millisecond {
			lastSweep = time.Now()
			l.sweep()
		}
	}
}

// sweep fails handshakes that took longer than the target's timeout.
func (l *evloop) sweep() {
	keep := l.pending[:0]
	to := l.e.t.Timeout
	for _, c := range l.pending {
		switch {
		case c.state >= stReady:
		case time.Since(c.start) > to:
			l.fail(c, errHandshakeTimeout)
		default:
			keep = append(keep, c)
		}
	}
	clear(l.pending[len(keep):])
	l.pending = keep
}

var errHandshakeTimeout = timeoutError{}

// timeoutError is a handshake that did not finish in time (a net.Error
// with Timeout, so classify counts it as "timeout").
type timeoutError struct{}

func (timeoutError) Error() string   { return "loadgen: handshake timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// fail ends connection c with err.
func (l *evloop) fail(c *rconn, err error) {
	if c.state == stClosed {
		return
	}
	e := l.e
	if c.state == stReady {
		c.err = err
		c.state = stClosed
		e.table[c.fd].Store(nil)
		abortClose(c.fd)
		if e.subs != nil {
			e.subs.Alive.Add(-1)
			e.subs.count(&e.subs.ends, describeEnd(err))
		}
		return
	}
	e.finish(c, err)
}

// describeEnd names why a ready connection ended.
func describeEnd(err error) string {
	var ce *closeError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close_%d", ce.code)
	}
	if errors.Is(err, errEOF) {
		return "eof"
	}
	return classify(err)
}

// closeError is a close frame from the server.
type closeError struct{ code int }

func (e *closeError) Error() string { return fmt.Sprintf("loadgen: closed by server (%d)", e.code) }
func (e *closeError) Unwrap() error { return errClosed }

var errEOF = fmt.Errorf("loadgen: connection closed by server: %w", io.EOF)

// event handles readiness of c.
func (l *evloop) event(c *rconn, ev uint32) {
	if c.state == stConnecting {
		if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		// Connected unless the socket reports an error; then SO_ERROR
		// says which (a refused connect). Skipping the getsockopt
		// otherwise saves a system call per handshake.
		if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			err := error(unix.ECONNREFUSED)
			if soerr, gerr := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); gerr != nil {
				err = gerr
			} else if soerr != 0 {
				err = unix.Errno(soerr)
			}
			l.fail(c, err)
			return
		}
		req := l.e.reqs[c.i%len(l.e.reqs)]
		if l.e.pipeline {
			req = l.pipelined(c, req)
		}
		if err := l.write(c, req); err != nil {
			l.fail(c, err)
			return
		}
		c.state = stUpgrade
		l.pending = append(l.pending, c)
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
		return
	}
	for c.state != stClosed {
		buf := l.buf
		off := 0
		if len(c.rest) > 0 {
			if c.need > int64(len(buf)) {
				l.buf = make([]byte, c.need)
				buf = l.buf
			}
			off = copy(buf, c.rest)
			c.rest = c.rest[:0]
		}
		n, err := unix.Read(c.fd, buf[off:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			if off > 0 {
				c.rest = append(c.rest, buf[:off]...)
			}
			return
		}
		if err != nil {
			l.fail(c, err)
			return
		}
		if n == 0 {
			l.fail(c, errEOF)
			return
		}
		data := buf[:off+n]
		used, err := l.consume(c, data)
		if err != nil {
			l.fail(c, err)
			return
		}
		if used < len(data) {
			c.rest = append(c.rest[:0], data[used:]...)
			if cap(c.rest) > 64<<10 && len(c.rest) < 4<<10 {
				c.rest = append([]byte(nil), c.rest...)
			}
		}
		if off+n < len(buf) {
			// A short read emptied the socket; the next arrival is a new edge.
			return
		}
	}
}

// consume parses what c received and returns the bytes used.
func (l *evloop) consume(c *rconn, data []byte) (int, error) {
	off := 0
	if c.state == stUpgrade {
		hl, err := parseHTTP101(data, l.e.accept)
		if err != nil {
			return 0, err
		}
		if hl == 0 {
			return 0, nil
		}
		c.tUp = time.Since(c.start)
		c.state = stGreeting
		off = hl
	}
	used, need, err := walkFrames(data[off:], maxServerFrame, c)
	c.need = need
	return off + used, err
}

// write sends b on c's socket (small writes: a short one is an error).
func (l *evloop) write(c *rconn, b []byte) error {
	for {
		n, err := unix.Write(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n != len(b) {
			return errShortWrite
		}
		return nil
	}
}

var errShortWrite = errors.New("loadgen: short write")

// writeFrame sends one masked client frame.
func (l *evloop) writeFrame(c *rconn, op byte, p []byte) error {
	l.mask = l.mask*1664525 + 1013904223
	l.wbuf = appendMaskedFrame(l.wbuf[:0], op, p, l.mask)
	return l.write(c, l.wbuf)
}

// onFrame handles one frame of c (frameSink).
func (c *rconn) onFrame(h frameHdr, p []byte) error {
	l := c.l
	switch h.Op {
	case 9: // ping
		return l.writeFrame(c, 10, p)
	case 10:
		return nil
	case 8:
		code := 1005
		if len(p) >= 2 {
			code = int(p[0])<<8 | int(p[1])
		}
		_ = l.writeFrame(c, 8, p[:min(len(p), 2)])
		return &closeError{code: code}
	}
	if !h.Fin || len(c.frag) > 0 {
		c.frag = append(c.frag, p...)
		if !h.Fin {
			return nil
		}
		p = c.frag
		defer func() { c.frag = c.frag[:0] }()
	}
	return c.onMessage(p)
}

// onMessage handles one complete server message (NATS: one chunk of the
// protocol stream).
func (c *rconn) onMessage(p []byte) error {
	l, t := c.l, c.l.e.t
	switch t.Kind {
	case kindNATS:
		if c.natsFn == nil {
			c.natsFn = c.onNATS
		}
		if err := c.np.Feed(p, c.natsFn); err != nil {
			return err
		}
		return c.err
	case kindBare:
		switch c.state {
		case stReady:
			if len(p) > 2 && p[0] == 'M' {
				c.onData(p[2:])
			}
		case stGreeting:
			if string(p) != "W" {
				return fmt.Errorf("%w: bad greeting %q", errServer, p)
			}
			return l.greeted(c)
		case stSubAck:
			if string(p) != "A" {
				return fmt.Errorf("%w: %q", errServer, p)
			}
			l.subscribed(c)
		}
		return nil
	}
	if t.Proto {
		if c.frame == nil {
			c.frame = new(pb.ServerFrame)
		}
		f := c.frame
		f.Reset()
		if err := f.UnmarshalVTUnsafe(p); err != nil {
			return err
		}
		switch {
		case f.Op == pb.Op_OP_MSG && c.state == stReady:
			c.onData(f.Data)
		case f.Op == pb.Op_OP_ERROR:
			code := "error"
			if f.Error != nil {
				code = pb.CodeName(f.Error.Code)
			}
			if c.state != stReady {
				return fmt.Errorf("%w: %s", errServer, code)
			}
			l.serverError(code)
		case f.Op == pb.Op_OP_WELCOME && c.state == stGreeting:
			return l.greeted(c)
		case f.Op == pb.Op_OP_ACK && c.state == stSubAck && f.Id == 1:
			l.subscribed(c)
		}
		return nil
	}
	if c.state == stReady {
		if d, ok := jsonMsgData(p); ok {
			c.onData(d)
		} else if code, ok := jsonErrorCode(p); ok {
			l.serverError(code)
		}
		return nil
	}
	switch {
	case bytes.HasPrefix(p, []byte(`{"op":"error"`)):
		return fmt.Errorf("%w: %.80s", errServer, p)
	case c.state == stGreeting && bytes.HasPrefix(p, []byte(`{"op":"welcome"`)):
		return l.greeted(c)
	case c.state == stSubAck && bytes.HasPrefix(p, []byte(`{"op":"ack","id":1}`)):
		l.subscribed(c)
	}
	return nil
}

// onNATS handles one NATS protocol message (natsHandler).
func (c *rconn) onNATS(k natsKind, _, _, pl []byte) {
	l := c.l
	var err error
	switch k {
	case natsMsg:
		if c.state == stReady {
			c.onData(pl)
		}
	case natsPing:
		err = l.writeFrame(c, 2, []byte("PONG\r\n"))
	case natsInfo:
		if c.state == stGreeting {
			c.state = stNATSPong
			if !l.e.pipeline {
				err = l.writeFrame(c, 2, []byte(natsConnect))
			}
		}
	case natsPong:
		switch c.state {
		case stNATSPong:
			err = l.greeted(c)
		case stSubAck:
			l.subscribed(c)
		}
	case natsErr:
		if c.state != stReady {
			err = fmt.Errorf("%w: -ERR %s", errServer, pl)
		} else {
			l.serverError(string(pl))
		}
	}
	if err != nil && c.err == nil {
		c.err = err
	}
}

// natsConnect is the CONNECT (and PING) a NATS client sends after INFO.
const natsConnect = "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":false,\"no_responders\":false}\r\nPING\r\n"

// pipelined returns the upgrade request followed by the client's first
// frames (NATS CONNECT+PING, the SUB), for -pipeline.
func (l *evloop) pipelined(c *rconn, req []byte) []byte {
	b := append(l.wbuf[:0], req...)
	if l.e.t.Kind == kindNATS {
		l.mask = l.mask*1664525 + 1013904223
		b = appendMaskedFrame(b, 2, []byte(natsConnect), l.mask)
	}
	if c.subject != "" {
		op, p := l.subFrame(c)
		l.mask = l.mask*1664525 + 1013904223
		b = appendMaskedFrame(b, op, p, l.mask)
	}
	l.wbuf = b
	return b
}

// subFrame returns the opcode and payload of c's subscription request.
func (l *evloop) subFrame(c *rconn) (byte, []byte) {
	switch l.e.t.Kind {
	case kindNATS:
		return 2, []byte("SUB " + c.subject + " 1\r\nPING\r\n")
	case kindBare:
		return 1, []byte("S " + c.subject)
	}
	f := pb.ClientFrame{Op: pb.Op_OP_SUB, Id: 1, Subject: c.subject}
	if l.e.t.Proto {
		b, _ := f.MarshalVT()
		return 2, b
	}
	return 1, pb.AppendClientJSON(nil, &f)
}

// greeted: the server's greeting arrived; subscribe or finish.
func (l *evloop) greeted(c *rconn) error {
	c.tWel = time.Since(c.start)
	if c.subject == "" {
		l.subscribed(c)
		return nil
	}
	c.state = stSubAck
	if l.e.pipeline {
		return nil // the SUB went with the upgrade request
	}
	op, p := l.subFrame(c)
	return l.writeFrame(c, op, p)
}

// subscribed: the handshake is complete.
func (l *evloop) subscribed(c *rconn) {
	c.state = stReady
	l.e.finish(c, nil)
}

// serverError counts an error message on a ready connection.
func (l *evloop) serverError(code string) {
	if s := l.e.subs; s != nil {
		s.count(&s.errors, code)
	}
}

// onData accounts one delivered payload.
func (c *rconn) onData(d []byte) {
	c.pending++
	s := c.l.e.subs
	if s == nil {
		return
	}
	seq, ok := payloadSeq(d)
	if !ok {
		return
	}
	gap, back := c.seq.see(seq)
	if gap != 0 {
		s.Gaps.Add(int64(gap))
	}
	if back {
		s.Backward.Add(1)
	}
	if seq%c.l.e.sample == 0 {
		if ts, ok := payloadTime(d); ok {
			s.Lat.Record(time.Duration(c.l.now - ts))
		}
	}
}

// seqSummary compares what each ready connection received with what its
// publisher sent (sentBy(conn number)).
func (e *engine) seqSummary(sentBy func(i int) uint64) map[string]any {
	var lost, subsLost, maxLost uint64
	for _, c := range e.readyConns() {
		want := sentBy(c.i)
		if got := c.seq.got(); got < want {
			d := want - got
			lost += d
			subsLost++
			maxLost = max(maxLost, d)
		}
	}
	return map[string]any{"lost": lost, "subscribers_with_loss": subsLost, "max_lost_per_subscriber": maxLost}
}

// adopt makes a client connected and subscribed by the goroutine path
// (dialOne) a receiver of e served by its own goroutine (-recv goroutine):
// reads of len(buf) bytes through the net.Conn (Go's netpoller), frames
// parsed in place as in the event loops. It blocks until the connection
// ends or e stops.
func (e *engine) adopt(cl *client, i int, rbuf int) {
	var fd int
	if sc, ok := cl.ws.c.(interface {
		SyscallConn() (syscall.RawConn, error)
	}); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(f uintptr) { fd = int(f) })
		}
	}
	l := &evloop{e: e, epfd: -1, buf: make([]byte, max(rbuf, 4096)), mask: rand.Uint32()}
	c := &rconn{i: i, fd: fd, l: l, state: stReady, start: time.Now()}
	if n := cl.ws.br.Buffered(); n > 0 {
		b, _ := cl.ws.br.Peek(n)
		c.rest = append(c.rest, b...)
	}
	e.mu.Lock()
	e.conns = append(e.conns, c)
	e.mu.Unlock()
	if e.subs != nil {
		e.subs.Alive.Add(1)
	}
	var err error
	for !e.stop.Load() {
		buf := l.buf
		off := 0
		if len(c.rest) > 0 {
			if c.need > int64(len(buf)) {
				l.buf = make([]byte, c.need)
				buf = l.buf
			}
			off = copy(buf, c.rest)
			c.rest = c.rest[:0]
		}
		var n int
		if n, err = cl.ws.c.Read(buf[off:]); err != nil {
			break
		}
		l.now = time.Now().UnixNano()
		data := buf[:off+n]
		var used int
		used, err = l.consume(c, data)
		if c.pending > 0 && e.subs != nil {
			e.subs.Delivered.Add(c.pending)
			e.subs.LastRecv.Store(l.now)
			c.pending = 0
		}
		if err != nil {
			break
		}
		c.rest = append(c.rest[:0], data[used:]...)
	}
	c.state = stClosed
	if e.subs != nil {
		e.subs.Alive.Add(-1)
		if err != nil {
			e.subs.count(&e.subs.ends, describeEnd(err))
		} else {
			e.subs.count(&e.subs.ends, "local_close")
		}
	}
}
