package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pool"
)

// Connection states.
const (
	stateHandshake int32 = iota
	stateOpen
	stateClosing // a close frame is queued; input is ignored
	stateClosed
)

// codec is the encoding of a connection's deliveries.
type codec uint8

const (
	codecJSON codec = iota
	codecProto
)

// WebSocket close codes the gateway sends.
const (
	closeNormal         = 1000
	closeGoingAway      = 1001
	closeProtocolError  = 1002
	closeInvalidData    = 1007
	closePolicyViolated = 1008
	closeTooBig         = 1009
	closeInternal       = 1011
)

// maxHandshakeBytes bounds the HTTP upgrade request.
const maxHandshakeBytes = 8 << 10

// conn is one client connection. Fields marked (reader) are touched only by
// the goroutine netpoll runs onRequest on, which netpoll serializes per
// connection and never overlaps with the close callback.
type conn struct {
	g     *Gateway
	nc    netpoll.Connection
	seq   uint64
	state atomic.Int32
	codec codec
	// (reader) the opcode of a fragmented message being reassembled
	fragOp ws.OpCode
	// (reader) how many rooms it is a presence member of; the rooms are
	// in the presence component (presence.go)
	nrooms uint16

	id    string        // session id (after upgrade)
	ident auth.Identity // (after upgrade)

	created      int64        // Unix nanoseconds
	lastRead     atomic.Int64 // Unix nanoseconds (coarse)
	lastPing     atomic.Int64
	partialSince atomic.Int64 // when an incomplete frame started; 0 if none

	partial   *pool.Buf  // (reader) bytes of an incomplete request or frame
	frag      *pool.Buf  // (reader) a fragmented message being reassembled
	subs      []string   // (reader) subscribed patterns
	flush     *flushList // (reader) connections to write once this read is handled
	pubTokens float64    // (reader) publish rate-limit bucket
	pubLast   int64      // (reader) when the bucket was last filled
	nsubs     atomic.Int32
	reason    atomic.Uint32 // leaveReason: why it is closing (bus.go)
	queries   atomic.Int32  // presence queries in flight

	// outbound queue; see outbound.go
	mu         sync.Mutex
	out        []*pool.Buf
	outBytes   int
	writing    bool
	closeAfter bool
	dead       bool // no more output accepted

	// direct writes; see writev.go
	fdGone bool
	fd     int32
	fdMu   sync.Mutex
}

type connKey struct{}

// A conn is its own netpoll context: onPrepare returns it, and onRequest
// gets it back with Value(connKey{}), without a context.WithValue
// allocation per connection. It is never done, like context.Background.
var _ context.Context = (*conn)(nil)

func (c *conn) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *conn) Done() <-chan struct{}       { return nil }
func (c *conn) Err() error                  { return nil }
func (c *conn) Value(key any) any {
	if key == (connKey{}) {
		return c
	}
	return nil
}

func (g *Gateway) onPrepare(nc netpoll.Connection) context.Context {
	now := g.now()
	c := &conn{g: g, nc: nc, fd: int32(fdOf(nc)), seq: g.seq.Add(1), created: now,
		pubTokens: float64(g.cfg.PublishBurst), pubLast: now}
	c.lastRead.Store(now)
	if g.draining.Load() {
		_ = nc.Close()
		return context.Background()
	}
	_ = nc.AddCloseCallback(c.onClose)
	g.reg.add(c)
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("connection accepted", "remote", nc.RemoteAddr().String())
	}
	g.metrics.accepted.Inc()
	return c
}

// onRequest consumes every byte that has arrived: netpoll calls it again
// while unread input remains.
func (g *Gateway) onRequest(ctx context.Context, nc netpoll.Connection) (err error) {
	r := nc.Reader()
	n := r.Len()
	c, _ := ctx.Value(connKey{}).(*conn)
	if c == nil {
		_ = r.Skip(n)
		_ = r.Release()
		return nc.Close()
	}
	c.flush = getFlushList()
	defer func() {
		if p := recover(); p != nil {
			g.metrics.panics.Inc()
			g.log.Error("gateway: panic handling a connection", "panic", p, "session", c.id)
			c.goAway(closeInternal, "internal error")
		}
		// Write what the read produced; every listed connection
		// waits for this.
		fl := c.flush
		c.flush = nil
		fl.run()
		_ = r.Skip(n)
		_ = r.Release()
	}()
	if n == 0 {
		return nil
	}
	c.lastRead.Store(g.now())
	if c.state.Load() >= stateClosing {
		return nil
	}
	data, err := r.Peek(n)
	if err != nil {
		c.closeNow()
		return nil
	}
	if c.partial != nil {
		used := c.completePartial(data)
		data = data[used:]
		if c.partial != nil || c.state.Load() >= stateClosing || len(data) == 0 {
			return nil
		}
		c.partialSince.Store(0)
	}
	consumed := c.process(data)
	c.keepRest(data, consumed)
	return nil
}

// completePartial feeds fresh bytes into the pending partial unit: in the
// handshake all of them (bounded); for a frame exactly the bytes that
// complete its header and then its payload, so a burst arriving behind half
// a frame is handled in place, not copied. It returns the bytes of fresh
// used and leaves c.partial nil once the pending unit is handled.
func (c *conn) completePartial(fresh []byte) int {
	if c.state.Load() == stateHandshake {
		data := c.appendPartial(fresh, len(fresh))
		if data == nil {
			return len(fresh)
		}
		consumed := c.process(data)
		c.keepRest(data, consumed)
		return len(fresh)
	}
	used := 0
	for c.partial != nil && c.state.Load() == stateOpen {
		need := c.partialNeed()
		take := min(need, len(fresh)-used)
		if take > 0 && c.appendPartial(fresh[used:], take) == nil {
			return len(fresh)
		}
		used += take
		if take < need {
			return used // still incomplete
		}
		data := c.partial.B
		consumed := c.frames(data)
		c.keepRest(data, consumed)
	}
	return used
}

// partialNeed returns how many more bytes complete the header, or with a
// complete header, the frame, pending in c.partial.
func (c *conn) partialNeed() int {
	b := c.partial.B
	if len(b) < 2 {
		return 2 - len(b)
	}
	hl := 2
	switch b[1] & 0x7f {
	case 126:
		hl = 4
	case 127:
		hl = 10
	}
	if b[1]&0x80 != 0 {
		hl += 4
	}
	if len(b) < hl {
		return hl - len(b)
	}
	h, n, err := parseClientHeader(b)
	if err != nil || h.Length > int64(c.g.cfg.MaxFrameBytes) {
		return 0 // frames() reports it
	}
	return max(0, n+int(h.Length)-len(b))
}

// process handles as much of data as forms complete units and returns how
// many bytes it used.
func (c *conn) process(data []byte) int {
	if c.state.Load() == stateHandshake {
		used := c.handshake(data)
		if used == 0 || c.state.Load() != stateOpen {
			return used
		}
		return used + c.frames(data[used:])
	}
	return c.frames(data)
}

// appendPartial appends fresh[:n] to the partial buffer and returns the
// whole pending input, or nil if the connection was closed for size.
func (c *conn) appendPartial(fresh []byte, n int) []byte {
	p := c.partial
	need := len(p.B) + n
	if need > c.inputLimit() {
		c.tooBig()
		return nil
	}
	if need > cap(p.Mem()) {
		np := pool.Get(need)
		np.B = np.B[:copy(np.B, p.B)]
		p.Release()
		p = np
		c.partial = p
	}
	p.B = append(p.B, fresh[:n]...)
	return p.B
}

// keepRest keeps data[consumed:] as the partial unit for the next call.
// The frame deadline runs from when the pending unit started: it restarts
// whenever a unit completed.
func (c *conn) keepRest(data []byte, consumed int) {
	rest := len(data) - consumed
	if c.state.Load() >= stateClosing {
		rest = 0
	}
	if rest == 0 {
		if c.partial != nil {
			c.partial.Release()
			c.partial = nil
		}
		c.partialSince.Store(0)
		return
	}
	if c.partial == nil {
		if rest > c.inputLimit() {
			c.tooBig()
			return
		}
		c.partial = pool.Get(rest)
		copy(c.partial.B, data[consumed:])
	} else {
		n := copy(c.partial.B, data[consumed:])
		c.partial.B = c.partial.B[:n]
	}
	if consumed > 0 || c.partialSince.Load() == 0 {
		c.partialSince.Store(c.g.now())
	}
}

func (c *conn) inputLimit() int {
	if c.state.Load() == stateHandshake {
		return maxHandshakeBytes + c.g.cfg.MaxFrameBytes + 14
	}
	return c.g.cfg.MaxFrameBytes + 14
}

func (c *conn) tooBig() {
	if c.state.Load() == stateHandshake {
		c.refuse("request_too_large")
		c.rejectRaw("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		return
	}
	c.limitHit("frame_bytes")
	c.goAway(closeTooBig, "frame too large")
}

// frames handles every complete frame at the start of data and returns
// the bytes used.
func (c *conn) frames(data []byte) int {
	used := 0
	for used < len(data) && c.state.Load() == stateOpen {
		b := data[used:]
		h, hn, err := parseClientHeader(b)
		if err == errNeedMore {
			return used
		}
		if err != nil {
			c.protocolErr(strings.TrimPrefix(err.Error(), "gateway: "))
			c.goAway(closeProtocolError, strings.TrimPrefix(err.Error(), "gateway: "))
			return len(data)
		}
		if h.Length > int64(c.g.cfg.MaxFrameBytes) {
			c.limitHit("frame_bytes")
			c.goAway(closeTooBig, "frame too large")
			return len(data)
		}
		if int64(len(b)-hn) < h.Length {
			return used
		}
		payload := b[hn : hn+int(h.Length)]
		ws.Cipher(payload, h.Mask, 0)
		used += hn + int(h.Length)
		c.frame(h, payload)
	}
	return used
}

// frame handles one complete, unmasked frame.
func (c *conn) frame(h ws.Header, payload []byte) {
	switch h.OpCode {
	case ws.OpPing:
		c.enqueueControl(ws.OpPong, payload)
	case ws.OpPong:
		// lastRead already advanced
	case ws.OpClose:
		c.onCloseFrame(payload)
	case ws.OpText, ws.OpBinary:
		if c.frag != nil {
			c.protocolErr("new message inside a fragmented message")
			c.goAway(closeProtocolError, "new message inside a fragmented message")
			return
		}
		if h.Fin {
			c.message(h.OpCode, payload)
			return
		}
		c.fragOp = h.OpCode
		c.frag = pool.Get(len(payload))
		copy(c.frag.B, payload)
	case ws.OpContinuation:
		if c.frag == nil {
			c.protocolErr("continuation without a message")
			c.goAway(closeProtocolError, "continuation without a message")
			return
		}
		total := len(c.frag.B) + len(payload)
		if total > c.g.cfg.MaxFrameBytes {
			c.limitHit("message_bytes")
			c.goAway(closeTooBig, "message too large")
			return
		}
		if total > cap(c.frag.Mem()) {
			nf := pool.Get(total)
			nf.B = nf.B[:copy(nf.B, c.frag.B)]
			c.frag.Release()
			c.frag = nf
		}
		c.frag.B = append(c.frag.B, payload...)
		if h.Fin {
			f := c.frag
			c.frag = nil
			c.message(c.fragOp, f.B)
			f.Release()
		}
	}
}

// onCloseFrame answers a client's close: its code is echoed (an empty
// close with an empty one), a malformed close with 1002 or 1007.
func (c *conn) onCloseFrame(payload []byte) {
	c.closeReason(reasonClose)
	switch {
	case len(payload) == 0:
		c.goAway(0, "")
	case len(payload) == 1:
		c.goAway(closeProtocolError, "invalid close payload")
	case !validCloseCode(binary.BigEndian.Uint16(payload)):
		c.goAway(closeProtocolError, "invalid close code")
	case !utf8.Valid(payload[2:]):
		c.goAway(closeInvalidData, "close reason is not UTF-8")
	default:
		c.goAway(binary.BigEndian.Uint16(payload), "")
	}
}

// message handles one complete data message.
func (c *conn) message(op ws.OpCode, payload []byte) {
	if op == ws.OpText && !utf8.Valid(payload) {
		c.protocolErr("text frame is not valid UTF-8")
		c.goAway(closeInvalidData, "text frame is not valid UTF-8")
		return
	}
	c.g.metrics.framesIn.Inc()
	c.handleMessage(op == ws.OpText, payload)
}

// rejectRaw writes an HTTP response and closes.
func (c *conn) rejectRaw(resp string) {
	b := pool.Get(len(resp))
	copy(b.B, resp)
	c.state.Store(stateClosing)
	c.enqueueAndClose(b)
}

var crlfcrlf = []byte("\r\n\r\n")

// handshake looks for a complete upgrade request at the start of data and
// runs the upgrade. It returns the bytes used (0 while incomplete).
func (c *conn) handshake(data []byte) int {
	end := bytes.Index(data[:min(len(data), maxHandshakeBytes)], crlfcrlf)
	if end < 0 {
		if len(data) >= maxHandshakeBytes {
			c.tooBig()
			return len(data)
		}
		return 0
	}
	end += len(crlfcrlf)
	c.upgrade(data[:end])
	return end
}
