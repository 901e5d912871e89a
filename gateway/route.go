package gateway

import (
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/pool"
)

// encodeServerFrame encodes f as one complete WebSocket frame (header and
// body) into a pooled buffer: JSON in a text frame or Protobuf in a binary
// frame. The caller owns the returned reference.
func encodeServerFrame(jsonCodec bool, f *pb.ServerFrame) *pool.Buf {
	if !jsonCodec {
		n := f.SizeVT()
		hl := serverHeaderLen(n)
		b := pool.Get(hl + n)
		_, _ = f.MarshalToSizedBufferVT(b.B[hl:])
		putServerHeader(b.B, hl, ws.OpBinary, n)
		return b
	}
	hint := pb.JSONServerSizeHint(f)
	if f.Error != nil {
		hint += 6 * len(f.Error.Message)
	}
	if w := f.Welcome; w != nil {
		hint += 256 + 6*(len(w.SessionId)+len(w.NodeId)+len(w.Tenant)+len(w.User))
	}
	b := pool.Get(maxServerHeader + hint)
	body := pb.AppendServerJSON(b.B[maxServerHeader:maxServerHeader], f)
	if &b.Mem()[maxServerHeader] != &body[:1][0] { // outgrew the hint
		nb := pool.Get(maxServerHeader + len(body))
		copy(nb.B[maxServerHeader:], body)
		b.Release()
		b = nb
		body = b.B[maxServerHeader:]
	}
	start := putServerHeader(b.Mem(), maxServerHeader, ws.OpText, len(body))
	b.B = b.Mem()[start : maxServerHeader+len(body)]
	return b
}

// encodeMsg encodes env as a MSG frame in one codec.
func encodeMsg(jsonCodec bool, env *pb.Envelope) *pool.Buf {
	f := pb.ServerFrame{
		Op:        pb.Op_OP_MSG,
		Subject:   env.Subject,
		Data:      env.Payload,
		Headers:   env.Headers,
		Text:      env.Text,
		TraceId:   env.TraceId,
		Timestamp: env.Timestamp,
	}
	return encodeServerFrame(jsonCodec, &f)
}

// seenSet remembers which multi-subscription connections already got the
// message being routed, so a connection whose patterns overlap receives it
// once. Pooled: steady state allocates nothing.
type seenSet struct {
	small [32]*conn
	n     int
	big   map[*conn]struct{}
}

var seenSets = sync.Pool{New: func() any { return new(seenSet) }}

// add reports whether c was new.
func (s *seenSet) add(c *conn) bool {
	for i := 0; i < s.n; i++ {
		if s.small[i] == c {
			return false
		}
	}
	if s.big != nil {
		if _, ok := s.big[c]; ok {
			return false
		}
	}
	if s.n < len(s.small) {
		s.small[s.n] = c
		s.n++
		return true
	}
	if s.big == nil {
		s.big = make(map[*conn]struct{})
	}
	s.big[c] = struct{}{}
	return true
}

func (s *seenSet) reset() {
	clear(s.small[:s.n])
	s.n = 0
	if s.big != nil {
		clear(s.big)
	}
}

// route delivers env to this node's subscribers: the frame is encoded at
// most once per codec and the same buffer queued on every connection. It
// returns the number of connections it was queued on. fl collects the
// connections to write to once the read being handled is done; nil writes
// before route returns.
func (g *Gateway) route(env *pb.Envelope, fl *flushList) int {
	start := time.Now()
	subs := g.router.Match(env.Tenant, env.Subject)
	if len(subs) == 0 {
		return 0
	}
	var jb, pbb *pool.Buf
	var seen *seenSet
	delivered := 0
	for _, c := range subs {
		if c.nsubs.Load() > 1 {
			if seen == nil {
				seen = seenSets.Get().(*seenSet)
			}
			if !seen.add(c) {
				continue
			}
		}
		var b *pool.Buf
		if c.codec == codecJSON {
			if jb == nil {
				jb = encodeMsg(true, env)
			}
			b = jb
		} else {
			if pbb == nil {
				pbb = encodeMsg(false, env)
			}
			b = pbb
		}
		if c.enqueue(b, fl) {
			delivered++
		}
	}
	if jb != nil {
		jb.Release()
	}
	if pbb != nil {
		pbb.Release()
	}
	if seen != nil {
		seen.reset()
		seenSets.Put(seen)
	}
	g.metrics.messagesOut.Add(float64(delivered))
	g.metrics.routeSeconds.Observe(time.Since(start).Seconds())
	return delivered
}

// deliverRemote is the spine handler: messages other nodes accepted, one
// tenant's in order on one goroutine.
//
// They take the write path of a client's read: each message is routed into
// a flush list that is handed to the writers, so local and remote traffic
// for a connection share its queue and its writer, and a burst from the
// spine coalesces the same way a busy room does (frames for a connection
// whose writer has not reached it yet join its next writev).
func (g *Gateway) deliverRemote(env *pb.Envelope) {
	fl := getFlushList()
	g.routeRemote(env, fl)
	fl.run()
}

// routeRemote routes env into fl. A panic is counted and logged; what was
// listed before it is still written (the caller runs fl).
func (g *Gateway) routeRemote(env *pb.Envelope, fl *flushList) {
	defer func() {
		if p := recover(); p != nil {
			g.metrics.panics.Inc()
			g.log.Error("gateway: panic routing a message from another node", "panic", p, "subject", env.Subject)
		}
	}()
	g.route(env, fl)
}

// subscribeRoute adds c under pattern in its tenant, and this node's
// interest in the pattern on the spine.
func (g *Gateway) subscribeRoute(c *conn, pattern string) error {
	if err := g.router.Insert(c.ident.Tenant, pattern, c); err != nil {
		return err
	}
	g.metrics.subscriptions.Inc()
	if g.spine != nil {
		if err := g.spine.Watch(c.ident.Tenant, pattern); err != nil {
			_ = g.router.Remove(c.ident.Tenant, pattern, c)
			g.metrics.subscriptions.Dec()
			return err
		}
	}
	return nil
}

func (g *Gateway) unsubscribeRoute(c *conn, pattern string) {
	if err := g.router.Remove(c.ident.Tenant, pattern, c); err != nil {
		return
	}
	g.metrics.subscriptions.Dec()
	if g.spine != nil {
		g.spine.Unwatch(c.ident.Tenant, pattern)
	}
}

// wallClock is the publish timestamp (Unix nanoseconds).
func (g *Gateway) wallClock() int64 { return time.Now().UnixNano() }
