package gateway

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The writers. Connections with queued frames ("dirty" connections: their
// c.writing is set and no one else writes them) are handed to a small set
// of writer goroutines, one per P (GOMAXPROCS), each with its own list of
// pending connections. A writer takes its whole list at once and gives
// each connection one round: one writev of its whole queue (up to
// maxIovecs frames). A connection that got more frames while the round
// was under way goes to the back of the list; one whose socket was full
// is handed to a blocking writeLoop goroutine (writev.go's fallback).
//
// Batching grows with load by itself: while a writer goes down its list,
// frames for connections already on it (or being written) only join their
// queues, so the next round carries all of them in one writev. Idle, a
// connection is written as soon as its frame is queued: the writer is
// woken at once (a parked writer is woken by the push that finds it
// parked, never by the others), and a read that made at most inlineConns
// connections dirty while their writer sleeps writes them itself.
//
//	reader (onRequest) ----- flushList ------+
//	                                         |  push: append under the shard's
//	NATS (deliverRemote) --- flushList ------+  lock; wake only if parked
//	                                         v
//	sweeper / close / any other -- push --> shard[i].pending
//	                                         |
//	                      writer i: take all pending; one writev per conn;
//	                      more queued -> pending again; EAGAIN -> writeLoop
//
// Under heavy load a writer also lingers: when it has been writing more
// than coalesceAbove frames a second, it spaces its rounds so that it makes
// about coalesceWrites writes a second (a round of n connections takes at
// least n/coalesceWrites, at most Config.MaxWriteDelay, 40 ms by default),
// and frames that arrive in between join the next round. A paced publisher
// at 500 messages/s to 1,000 subscribers then costs one writev per
// subscriber every 40 ms (about 20 frames) instead of one per message: a
// writev to a loopback TCP socket costs about 5 us of CPU here, a frame in
// it about 0.1 us. A round that already averaged coalesceFrames frames per
// write is not followed by a wait (at high rates the writer then settles
// near that batch size, with less delay). Below coalesceBelow frames a
// second it writes as soon as it can again. Latency pays at most MaxWriteDelay, and only above
// coalesceAbove (a room of 1,000 at 100 messages/s is below it).
//
// Lock order: conn.mu, then writeShard.mu (push runs under conn.mu); a
// writer never holds its shard's lock while it takes a conn's.

// inlineConns is the most connections a read writes itself when their
// writer is parked: a reply, or a message to a handful of subscribers,
// leaves without waking a goroutine.
const inlineConns = 4

// The writers' load-adaptive linger (see above), per writer.
const (
	coalesceAbove  = 200_000 // frames/s: start lingering above this
	coalesceBelow  = 150_000 // frames/s: stop lingering below this
	coalesceWrites = 25_000  // writes/s a lingering writer aims for
	coalesceFrames = 32      // frames per write that need no lingering
	// defaultMaxLinger bounds a lingering writer's wait (Config.MaxWriteDelay).
	defaultMaxLinger = 40 * time.Millisecond
	rateWindow       = 50 * time.Millisecond // the frame rate is measured over this
)

// A writeShard is one writer goroutine and its pending connections.
type writeShard struct {
	mu      sync.Mutex
	pending []*conn
	parked  atomic.Bool // the writer waits on wake with nothing pending
	wake    chan struct{}
	_       [64]byte // keep shards on separate cache lines
}

// writeSched is the set of writers, started on first use.
type writeSched struct {
	once   sync.Once
	shards []*writeShard
	next   atomic.Uint32 // round-robin for single pushes

	// gate is held (read-locked) by a writer for each round; tests
	// write-lock it to hold the writers while frames accumulate.
	gate sync.RWMutex

	// maxDelay is Config.MaxWriteDelay in nanoseconds (0: the default,
	// negative: no lingering). Process-wide, like the writers.
	maxDelay atomic.Int64
}

// maxLinger returns the longest a lingering writer waits (0: it does not).
func (s *writeSched) maxLinger() time.Duration {
	switch d := s.maxDelay.Load(); {
	case d == 0:
		return defaultMaxLinger
	case d < 0:
		return 0
	default:
		return time.Duration(d)
	}
}

var sched writeSched

// start launches one writer per P.
func (s *writeSched) start() {
	s.once.Do(func() {
		n := max(runtime.GOMAXPROCS(0), 1)
		s.shards = make([]*writeShard, n)
		for i := range s.shards {
			sh := &writeShard{pending: make([]*conn, 0, 1024), wake: make(chan struct{}, 1)}
			s.shards[i] = sh
			go sh.run()
		}
	})
}

// shardOf picks c's shard for a single push. Any shard will do (the
// connection's c.writing keeps it on one list at a time); the accept
// sequence spreads connections evenly.
func (s *writeSched) shardOf(c *conn) *writeShard {
	s.start()
	return s.shards[c.seq%uint64(len(s.shards))]
}

// push hands c, which the caller made dirty (c.writing), to a writer.
// It may run under c.mu.
func (s *writeSched) push(c *conn) {
	sh := s.shardOf(c)
	sh.mu.Lock()
	sh.pending = append(sh.pending, c)
	sh.unlockAndWake()
}

// pushAll hands a flush list's connections to the writers, split into
// one contiguous part per shard (one lock and at most one wake-up each).
func (s *writeSched) pushAll(conns []*conn) {
	s.start()
	n := len(s.shards)
	parts := min(n, len(conns))
	first := int(s.next.Add(1))
	for p := 0; p < parts; p++ {
		lo, hi := p*len(conns)/parts, (p+1)*len(conns)/parts
		sh := s.shards[(first+p)%n]
		sh.mu.Lock()
		sh.pending = append(sh.pending, conns[lo:hi]...)
		sh.unlockAndWake()
	}
}

// unlockAndWake unlocks sh.mu, waking the writer if it was parked.
// Assumes sh.mu held.
func (sh *writeShard) unlockAndWake() {
	wasParked := sh.parked.Load()
	if wasParked {
		sh.parked.Store(false)
	}
	sh.mu.Unlock()
	if wasParked {
		sh.wake <- struct{}{} // the one token of this park: never blocks
	}
}

// run is a writer: it takes every pending connection and writes one
// round to each, until the process ends.
func (sh *writeShard) run() {
	w := new(writer)
	var batch, again []*conn
	winStart, winFrames := time.Now(), 0
	linger := false
	for {
		sh.mu.Lock()
		for len(sh.pending) == 0 {
			sh.parked.Store(true)
			sh.mu.Unlock()
			<-sh.wake
			sh.mu.Lock()
		}
		batch, sh.pending = sh.pending, batch[:0]
		sh.mu.Unlock()

		start := time.Now()
		if el := start.Sub(winStart); el >= rateWindow {
			rate := float64(winFrames) / el.Seconds()
			linger = rate > coalesceAbove || (linger && rate > coalesceBelow)
			winStart, winFrames = start, 0
		}
		w.frames = 0
		sched.gate.RLock()
		for i, c := range batch {
			batch[i] = nil
			more, ok := w.roundSafely(c)
			if !ok {
				w = &writer{frames: w.frames} // a panic: the old one may hold frames
			}
			if more {
				again = append(again, c)
			}
		}
		sched.gate.RUnlock()
		winFrames += w.frames
		if len(again) > 0 {
			// Behind what was queued meanwhile: every dirty
			// connection gets a round before any gets two.
			sh.mu.Lock()
			sh.pending = append(sh.pending, again...)
			sh.mu.Unlock()
			clear(again)
			again = again[:0]
		}
		if linger && len(again) == 0 && w.frames < coalesceFrames*len(batch) {
			// (Rounds that already carried coalesceFrames frames per
			// write, or a connection with more than a writev's worth,
			// are batched enough: waiting would only add latency.)
			d := min(time.Duration(len(batch))*time.Second/coalesceWrites, sched.maxLinger())
			if wait := d - time.Since(start); wait > 0 {
				time.Sleep(wait)
			}
		}
	}
}

// roundSafely runs c.round, turning a panic into a closed connection.
func (w *writer) roundSafely(c *conn) (more, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.g.metrics.panics.Inc()
			c.g.log.Error("gateway: panic in a connection writer", "panic", p, "session", c.id)
			c.kill()
			more, ok = false, false
		}
	}()
	return c.round(w), true
}
