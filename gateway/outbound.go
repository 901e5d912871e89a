package gateway

import (
	"encoding/binary"
	"sync"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/pool"
)

// The outbound queue. Every byte a connection sends passes through it, so
// only one goroutine (the writer) touches netpoll's Writer at a time. The
// queue is bounded in bytes (Config.OutboundBufferBytes), counting bytes
// handed to the writer until the write completes. A writer goroutine exists
// only while the queue is not empty.

// enqueue queues a shared frame for delivery, taking one reference that
// the writer releases. It reports whether the frame was queued; when the
// budget is exhausted the connection is closed with SLOW_CONSUMER (or the
// frame dropped, per Config.DropOnSlowConsumer).
func (c *conn) enqueue(b *pool.Buf) bool {
	n := len(b.B)
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return false
	}
	// An empty queue always takes one frame, however large (frames are
	// bounded by MaxFrameBytes), so a big message is not a slow consumer.
	if c.outBytes > 0 && c.outBytes+n > c.g.cfg.OutboundBufferBytes {
		if c.g.cfg.DropOnSlowConsumer {
			c.mu.Unlock()
			c.g.metrics.dropped.Inc()
			return false
		}
		c.slowConsumerLocked()
		c.mu.Unlock()
		return false
	}
	b.Retain(1)
	c.pushLocked(b, n)
	c.mu.Unlock()
	return true
}

// enqueueForce queues a frame this connection owns (its reference passes
// to the queue), ignoring the budget: replies, control frames and the
// handshake. It drops the frame when the connection is dead.
func (c *conn) enqueueForce(b *pool.Buf) { c.enqueueOwned(b, false) }

// enqueueAndClose queues b (owned) as the last frame and closes after it.
func (c *conn) enqueueAndClose(b *pool.Buf) { c.enqueueOwned(b, true) }

func (c *conn) enqueueOwned(b *pool.Buf, last bool) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		b.Release()
		return
	}
	c.pushLocked(b, len(b.B))
	if last {
		c.dead = true
		c.closeAfter = true
	}
	c.mu.Unlock()
}

// pushLocked appends and starts a writer if none runs. Assumes c.mu held.
func (c *conn) pushLocked(b *pool.Buf, n int) {
	c.out = append(c.out, b)
	c.outBytes += n
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

// slowConsumerLocked drops the queued (not in-flight) frames and queues
// SLOW_CONSUMER and a close frame. Assumes c.mu held.
func (c *conn) slowConsumerLocked() {
	c.g.metrics.slowConsumers.Inc()
	for i, q := range c.out {
		c.outBytes -= len(q.B)
		q.Release()
		c.out[i] = nil
	}
	c.out = c.out[:0]
	c.state.Store(stateClosing)
	ef := encodeServerFrame(c.codec == codecJSON, &pb.ServerFrame{
		Op:    pb.Op_OP_ERROR,
		Error: &pb.Error{Code: pb.ErrorCode_ERROR_CODE_SLOW_CONSUMER, Message: "outbound buffer full"},
	})
	c.pushLocked(ef, len(ef.B))
	cf := closeFrame(closePolicyViolated, "slow consumer")
	c.pushLocked(cf, len(cf.B))
	c.dead = true
	c.closeAfter = true
}

// writeLoop drains the queue: each round hands every queued frame to one
// writev (see writev.go), so frames that queue during a round leave
// together in the next. A frame's reference is released once written.
func (c *conn) writeLoop() {
	defer func() {
		if p := recover(); p != nil {
			c.g.metrics.panics.Inc()
			c.g.log.Error("gateway: panic in a connection writer", "panic", p, "session", c.id)
			c.kill()
		}
	}()
	iov := iovecPool.Get().(*iovecs)
	defer iovecPool.Put(iov)
	var batch []*pool.Buf
	for {
		c.mu.Lock()
		if len(c.out) == 0 {
			c.writing = false
			closeNow := c.closeAfter
			c.mu.Unlock()
			if closeNow {
				c.closeNow()
			}
			return
		}
		batch, c.out = c.out, batch[:0]
		c.mu.Unlock()

		size, err := c.writeBatch(iov, batch)
		c.mu.Lock()
		c.outBytes -= size
		c.mu.Unlock()
		for i, b := range batch {
			b.Release()
			batch[i] = nil
		}
		batch = batch[:0]
		if err != nil {
			c.kill()
			return
		}
		c.g.metrics.bytesOut.Add(float64(size))
	}
}

var iovecPool = sync.Pool{New: func() any { return new(iovecs) }}

// kill marks the connection dead, frees its queue and closes the socket.
func (c *conn) kill() {
	c.mu.Lock()
	c.dead = true
	c.writing = false
	for i, q := range c.out {
		q.Release()
		c.out[i] = nil
	}
	c.out = nil
	c.outBytes = 0
	c.mu.Unlock()
	c.closeNow()
}

// closeNow closes the socket; the close callback cleans up.
func (c *conn) closeNow() {
	if c.state.Swap(stateClosed) != stateClosed {
		_ = c.nc.Close()
	}
}

// enqueueControl queues a control frame (ping/pong) with payload.
func (c *conn) enqueueControl(op ws.OpCode, payload []byte) {
	b := pool.Get(2 + len(payload))
	b.B[0] = 0x80 | byte(op)
	b.B[1] = byte(len(payload))
	copy(b.B[2:], payload)
	c.enqueueForce(b)
}

// goAway sends a close frame with code and reason, then closes; code 0
// sends an empty close frame (the echo of an empty one).
func (c *conn) goAway(code uint16, reason string) {
	switch c.state.Load() {
	case stateHandshake:
		c.closeNow()
		return
	case stateClosed:
		return
	}
	c.state.Store(stateClosing)
	var b *pool.Buf
	if code == 0 {
		b = pool.Get(2)
		b.B[0], b.B[1] = 0x80|byte(ws.OpClose), 0
	} else {
		b = closeFrame(code, reason)
	}
	c.enqueueAndClose(b)
}

// closeFrame encodes a close frame.
func closeFrame(code uint16, reason string) *pool.Buf {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	b := pool.Get(4 + len(reason))
	b.B[0] = 0x80 | byte(ws.OpClose)
	b.B[1] = byte(2 + len(reason))
	binary.BigEndian.PutUint16(b.B[2:], code)
	copy(b.B[4:], reason)
	return b
}

// onClose is netpoll's close callback: it runs once, never alongside
// onRequest, so it may touch the reader's fields.
func (c *conn) onClose(netpoll.Connection) error {
	c.state.Store(stateClosed)
	c.forgetFd()
	c.mu.Lock()
	c.dead = true
	for i, q := range c.out {
		q.Release()
		c.out[i] = nil
	}
	c.out = nil
	c.outBytes = 0
	c.mu.Unlock()
	g := c.g
	for _, p := range c.subs {
		g.unsubscribeRoute(c, p)
	}
	c.subs = nil
	c.nsubs.Store(0)
	if c.partial != nil {
		c.partial.Release()
		c.partial = nil
	}
	if c.frag != nil {
		c.frag.Release()
		c.frag = nil
	}
	g.reg.remove(c)
	if c.id != "" {
		g.metrics.connections.Dec()
	}
	return nil
}
