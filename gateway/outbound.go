package gateway

import (
	"context"
	"encoding/binary"
	"log/slog"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/pool"
)

// The outbound queue. Every byte a connection sends passes through it, and
// only the queue's current writer (the one that set c.writing) writes to
// the socket. The queue is bounded in bytes (Config.OutboundBufferBytes),
// counting bytes handed to the writer until the write completes.
//
// Who writes. A connection whose queue becomes non-empty is "dirty": it is
// handed to one of the writers (writer.go, one goroutine per P), which give
// every dirty connection one writev of its whole queue per round. Frames
// queued while a client's read is handled (its publishes routed to every
// subscriber, its ACKs) and while a message from another node is routed are
// collected in a flush list first and handed over once the read (or the
// message) is handled; frames from anywhere else (the sweeper's pings, a
// close) are handed over at once. Frames queued for a connection a writer
// already holds just join its queue, so under load one writev carries every
// frame that arrived since the last (publishes of many reads, local and
// remote alike), and idle, a frame leaves at once: a parked writer is
// woken, and a read that dirtied only a few connections of parked writers
// writes them itself (as it always writes its own connection's reply). A socket that cannot take a whole round hands the
// connection to a writeLoop goroutine, which waits for the socket through
// netpoll and exists only until the queue is empty.

// enqueue queues a shared frame for delivery, taking one reference that
// the writer releases. It reports whether the frame was queued; when the
// budget is exhausted the connection is closed with SLOW_CONSUMER (or the
// frame dropped, per Config.DropOnSlowConsumer).
//
// fl is the flush list of the read being handled, or nil.
func (c *conn) enqueue(b *pool.Buf, fl *flushList) bool {
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
	c.pushLocked(b, n, fl)
	c.mu.Unlock()
	return true
}

// enqueueForce queues a frame this connection owns (its reference passes
// to the queue), ignoring the budget: replies, control frames and the
// handshake. It drops the frame when the connection is dead.
func (c *conn) enqueueForce(b *pool.Buf) { c.enqueueOwned(b, false, nil) }

// enqueueReply is enqueueForce for the reader: the frame leaves with the
// rest of what the read being handled produced, written by the reader
// itself if the read made c's queue non-empty (flushList.run).
func (c *conn) enqueueReply(b *pool.Buf) {
	if fl := c.flush; fl != nil {
		fl.reply = c
	}
	c.enqueueOwned(b, false, c.flush)
}

// enqueueAndClose queues b (owned) as the last frame and closes after it.
func (c *conn) enqueueAndClose(b *pool.Buf) { c.enqueueOwned(b, true, nil) }

func (c *conn) enqueueOwned(b *pool.Buf, last bool, fl *flushList) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		b.Release()
		return
	}
	c.pushLocked(b, len(b.B), fl)
	if last {
		c.dead = true
		c.closeAfter = true
	}
	c.mu.Unlock()
}

// pushLocked appends b and, if no writer owns the queue, makes one: the
// read's flush list when there is one (the list hands it to a writer once
// the read is handled), else a writer at once. Assumes c.mu held.
func (c *conn) pushLocked(b *pool.Buf, n int, fl *flushList) {
	c.out = append(c.out, b)
	c.outBytes += n
	if !c.writing {
		c.writing = true
		if fl != nil {
			fl.add(c)
		} else {
			sched.push(c)
		}
	}
}

// slowConsumerLocked drops the queued (not in-flight) frames and queues
// SLOW_CONSUMER and a close frame. Assumes c.mu held.
func (c *conn) slowConsumerLocked() {
	c.g.metrics.slowConsumers.Inc()
	c.note(slog.LevelWarn, "slow consumer: closing", "outbound buffer full")
	c.closeReason(reasonSlowConsumer)
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
	c.pushLocked(ef, len(ef.B), nil)
	cf := closeFrame(closePolicyViolated, "slow consumer")
	c.pushLocked(cf, len(cf.B), nil)
	c.dead = true
	c.closeAfter = true
}

// writeLoop drains the queue from a goroutine of its own, waiting for the
// socket where it is full (a round the socket could not take at once ends
// here). It owns the queue (c.writing) until it empties.
func (c *conn) writeLoop() {
	w := writers.Get().(*writer)
	defer func() {
		if p := recover(); p != nil {
			c.g.metrics.panics.Inc()
			c.g.log.Error("gateway: panic in a connection writer", "panic", p, "session", c.id)
			c.kill()
			return // w may hold frames: dropped with it
		}
		writers.Put(w)
	}()
	for {
		n, size := c.take(w)
		if n == 0 {
			return
		}
		wrote, err := c.writev(&w.iov, n)
		if err == nil && wrote < size {
			err = c.writeRest(w.bufs[:n], wrote)
		}
		w.release(n)
		if !c.wrote(size, err) {
			return
		}
	}
}

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
	c.closeReason(reasonClose)
	var b *pool.Buf
	if code == 0 {
		b = pool.Get(2)
		b.B[0], b.B[1] = 0x80|byte(ws.OpClose), 0
	} else {
		b = closeFrame(code, reason)
	}
	c.enqueueAndClose(b)
}

// testHookOnClose, when set (by tests, before connections exist), runs
// first in onClose.
var testHookOnClose func(*conn)

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
	if testHookOnClose != nil {
		testHookOnClose(c)
	}
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
	if c.id != "" && g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("connection closed", "session", c.id, "tenant", c.ident.Tenant, "user", c.ident.User, "reason", c.leaveReason().String())
	}
	g.leave(c)
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
