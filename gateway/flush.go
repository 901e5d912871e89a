package gateway

import (
	"sync"
	"unsafe"

	"github.com/arqonbus/arqonbus/pool"
)

// A flushList collects the connections whose queues a read made non-empty
// (they are owned by the list: c.writing is set). Once the read is handled,
// run hands them to the writers (writer.go), so every frame the read
// produced for a connection (the same message to a thousand subscribers,
// sixty-four pipelined publishes to one) leaves in one writev, together
// with whatever other reads queued for it before its writer got to it.
type flushList struct {
	conns []*conn
	reply *conn // the connection whose read queued a reply, if any
}

var flushLists = sync.Pool{New: func() any { return &flushList{conns: make([]*conn, 0, 64)} }}

func getFlushList() *flushList { return flushLists.Get().(*flushList) }

func (fl *flushList) add(c *conn) { fl.conns = append(fl.conns, c) }

// run hands every listed connection to a writer, or writes them itself
// when they are few and their writers are parked (an idle node answers
// without waking a goroutine), then returns fl to its pool. A reply (an
// ACK, the upgrade's 101 and WELCOME) to the connection whose read this
// was is written at once whatever the load, so a client that waits for
// its ACK is never held by a lingering writer. It must run for every
// list: a listed connection has no other writer.
func (fl *flushList) run() {
	conns := fl.conns
	if r := fl.reply; r != nil && len(conns) > 1 {
		for i := len(conns) - 1; i >= 0; i-- { // the reply came last, usually
			if conns[i] == r {
				last := len(conns) - 1
				conns[i], conns[last] = conns[last], conns[i]
				conns = conns[:last]
				flushAll(fl.conns[last : last+1])
				break
			}
		}
	}
	if len(conns) > 0 {
		if len(conns) == 1 && conns[0] == fl.reply || inlineOK(conns) {
			flushAll(conns)
		} else {
			sched.pushAll(conns)
		}
	}
	clear(fl.conns)
	fl.conns = fl.conns[:0]
	fl.reply = nil
	flushLists.Put(fl)
}

// inlineOK reports whether conns are few and their writers parked.
func inlineOK(conns []*conn) bool {
	if len(conns) > inlineConns {
		return false
	}
	for _, c := range conns {
		if !sched.shardOf(c).parked.Load() {
			return false
		}
	}
	return true
}

// flushAll writes one round to each connection without blocking.
func flushAll(conns []*conn) {
	w := writers.Get().(*writer)
	for _, c := range conns {
		if !w.flushSafely(c) {
			// A panic killed c; its round's writer may still hold
			// frames, so it is dropped. The others go on.
			w = new(writer)
		}
	}
	writers.Put(w)
}

// flushSafely runs c.flushOnce, turning a panic into a closed connection.
func (w *writer) flushSafely(c *conn) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.g.metrics.panics.Inc()
			c.g.log.Error("gateway: panic in a connection writer", "panic", p, "session", c.id)
			c.kill()
			ok = false
		}
	}()
	c.flushOnce(w)
	return true
}

// A writer is the scratch space of one write round: the frames taken from
// a queue and their iovecs.
type writer struct {
	iov    iovecs
	bufs   [maxIovecs]*pool.Buf
	frames int // frames taken, for the writers' load estimate (writer.go)
}

var writers = sync.Pool{New: func() any { return new(writer) }}

// release drops the references to the first n frames of the round.
func (w *writer) release(n int) {
	for i, b := range w.bufs[:n] {
		b.Release()
		w.bufs[i] = nil
	}
}

// queueKeep is the largest queue array an empty queue keeps past a sweep,
// so an idle connection after a burst holds a few slots, not the burst's;
// a busy one keeps its array between rounds and appends allocate nothing.
const queueKeep = 8

// trimQueue drops an empty queue's array if a burst grew it.
func (c *conn) trimQueue() {
	c.mu.Lock()
	if len(c.out) == 0 && cap(c.out) > queueKeep {
		c.out = nil
	}
	c.mu.Unlock()
}

// take moves up to maxIovecs queued frames into w and fills its iovecs.
// With the queue empty it gives up ownership (closing the connection if a
// close was queued) and returns 0.
func (c *conn) take(w *writer) (n, size int) {
	c.mu.Lock()
	n = copy(w.bufs[:], c.out)
	if n == 0 {
		c.finishLocked()
		return 0, 0
	}
	rest := copy(c.out, c.out[n:])
	clear(c.out[rest:])
	c.out = c.out[:rest]
	c.mu.Unlock()
	for i, b := range w.bufs[:n] {
		w.iov[i].Base = unsafe.SliceData(b.B)
		w.iov[i].SetLen(len(b.B))
		size += len(b.B)
	}
	return n, size
}

// finishLocked gives up ownership of an empty queue and unlocks c.mu;
// a queued close happens now.
func (c *conn) finishLocked() {
	c.writing = false
	closeNow := c.closeAfter
	c.mu.Unlock()
	if closeNow {
		c.closeNow()
	}
}

// wrote accounts a finished round of size bytes. It reports whether the
// writer still owns a live connection.
func (c *conn) wrote(size int, err error) bool {
	if err != nil {
		c.kill()
		return false
	}
	c.g.metrics.bytesOut.Add(float64(size))
	c.mu.Lock()
	c.outBytes -= size
	c.mu.Unlock()
	return true
}

// round writes one round to c without blocking: one writev of what is
// queued (up to maxIovecs frames). It reports whether more frames are
// queued, in which case the caller is still c's writer and must give it
// another round. When the socket could not take the whole round, the
// rest and what follows go to a writeLoop goroutine (which then owns c).
func (c *conn) round(w *writer) (more bool) {
	n, size := c.take(w)
	if n == 0 {
		return false
	}
	w.frames += n
	wrote, err := c.writev(&w.iov, n)
	if err == nil && wrote < size {
		rest := make([]*pool.Buf, n)
		copy(rest, w.bufs[:n])
		clear(w.bufs[:n])
		go c.writeLoopAfter(rest, wrote, size)
		return false
	}
	w.release(n)
	if err != nil {
		c.kill()
		return false
	}
	c.g.metrics.bytesOut.Add(float64(size))
	c.mu.Lock()
	c.outBytes -= size
	if len(c.out) == 0 {
		c.finishLocked()
		return false
	}
	c.mu.Unlock()
	return true
}

// flushOnce writes one round to c from the goroutine that queued its
// frames; frames queued meanwhile go to a writer.
func (c *conn) flushOnce(w *writer) {
	if c.round(w) {
		sched.push(c)
	}
}

// writeLoopAfter finishes a round the socket could not take at once
// (frames, of which done bytes were written), then drains the queue.
func (c *conn) writeLoopAfter(frames []*pool.Buf, done, size int) {
	err := c.writeRest(frames, done)
	for _, b := range frames {
		b.Release()
	}
	if c.wrote(size, err) {
		c.writeLoop()
	}
}
