package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// subStats collects what subscribers receive.
type subStats struct {
	Lat       Hist
	Delivered atomic.Int64
	Alive     atomic.Int64
	LastRecv  atomic.Int64 // Unix ns of the latest delivery

	// Sequence checks, summed over subscribers: messages that skipped
	// ahead of the next expected number (Gaps: how many numbers were
	// skipped) and messages at or below one already seen (Backward:
	// duplicates or reordering).
	Gaps     atomic.Int64
	Backward atomic.Int64

	mu     sync.Mutex
	ends   map[string]int // why read loops ended
	errors map[string]int // ERROR frames / -ERR by code
}

// run is a subscriber's read loop: it records latency from the payload's
// timestamp and counts how the loop ended. It blocks.
func (s *subStats) run(c *client) { s.runWith(c, nil) }

// runWith is run with a hook called after each delivery.
func (s *subStats) runWith(c *client, each func()) {
	s.Alive.Add(1)
	var sq multiSeq
	err := c.readLoop(func(p []byte) {
		if each != nil {
			each()
		}
		now := time.Now().UnixNano()
		if ts, ok := payloadTime(p); ok {
			s.Lat.Record(time.Duration(now - ts))
		}
		if seq, ok := payloadSeq(p); ok {
			g, b := sq.see(seq)
			if g != 0 {
				s.Gaps.Add(int64(g))
			}
			if b {
				s.Backward.Add(1)
			}
		}
		s.Delivered.Add(1)
		s.LastRecv.Store(now)
	}, func(code string) { s.count(&s.errors, code) })
	s.Alive.Add(-1)
	s.count(&s.ends, describeClose(c.ws, err))
}

// pubSeqBase separates publishers' sequence numbers: publisher p of a run
// with several numbers its messages from p*pubSeqBase (see fillSeq: 10
// decimal digits), so a subscriber checks each publisher's order apart.
const pubSeqBase = 100_000_000

// multiSeq follows one subscriber's sequence numbers from each publisher.
type multiSeq struct{ t []seqTrack }

// see records message seq (publisher seq/pubSeqBase).
func (m *multiSeq) see(seq uint64) (gap uint64, backward bool) {
	p := int(seq / pubSeqBase)
	if p >= len(m.t) {
		m.t = append(m.t, make([]seqTrack, p+1-len(m.t))...)
	}
	return m.t[p].see(seq % pubSeqBase)
}

// got returns the messages seen in order or ahead, from every publisher.
func (m *multiSeq) got() uint64 {
	var n uint64
	for i := range m.t {
		n += m.t[i].got
	}
	return n
}

// seqTrack follows one subscriber's sequence numbers from one publisher.
type seqTrack struct {
	next uint64 // next expected number
	got  uint64 // messages in order or ahead (not backward)
}

// see records message seq and returns how many numbers it skipped and
// whether it went backward (a duplicate or a reordering).
func (t *seqTrack) see(seq uint64) (gap uint64, backward bool) {
	switch {
	case seq == t.next:
	case seq > t.next:
		gap = seq - t.next
	default:
		return 0, true
	}
	t.got++
	t.next = seq + 1
	return gap, false
}

func (s *subStats) count(m *map[string]int, k string) {
	s.mu.Lock()
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[k]++
	s.mu.Unlock()
}

// summary returns the JSON form.
func (s *subStats) summary() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]any{
		"delivered":     s.Delivered.Load(),
		"seq_gaps":      s.Gaps.Load(),
		"seq_backward":  s.Backward.Load(),
		"alive":         s.Alive.Load(),
		"latency":       s.Lat.Summary(),
		"read_loop_end": copyMap(s.ends),
		"error_frames":  copyMap(s.errors),
	}
}

func copyMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// publisher is one publishing connection and its subject.
type publisher struct {
	c       *client
	subject string
}

// maxPubBatch bounds the messages one publisher write carries.
var maxPubBatch = 64

// publishLoop publishes from pubs round-robin at rate messages/s in total
// (0: as fast as the sockets take them) for d or until ctx ends, spread
// over up to 4 goroutines. Each payload carries the send time and the
// publisher's sequence number. It returns the number of send errors.
//
// Publishing is pipelined: whatever is due is written at once, up to
// maxPubBatch (-batch) frames in one write per publisher. Paced (rate > 0),
// a batch holds the messages that became due since the last write (one at
// low rates); unpaced, each write carries a full batch.
//
// A write blocked by the server's backpressure ends at the deadline (the
// connection's write deadline is set to it). With window > 0 the loop is
// closed: it writes only while at most window messages per subscriber are
// in flight, sent*perMsg - delivered() <= window*perMsg (a batch is cut to
// the room left), which measures the throughput the server sustains
// without queueing without bound. delivered() may lag (subscribers add
// their counts once per read). The loop waits until there is room for a
// whole batch (or for half the window, if smaller), so a full window does
// not degrade into one-message writes.
func publishLoop(ctx context.Context, pubs []publisher, rate float64, d time.Duration, size int, sent *atomic.Int64) int64 {
	return publishLoopWindow(ctx, pubs, rate, d, size, sent, 0, 0, nil)
}

// publishLoopWindow is publishLoop with a delivery window.
func publishLoopWindow(ctx context.Context, pubs []publisher, rate float64, d time.Duration, size int, sent *atomic.Int64,
	window int, perMsg int64, delivered func() int64) int64 {
	workers := min(len(pubs), 4)
	var wg sync.WaitGroup
	var errs atomic.Int64
	deadline := time.Now().Add(d)
	for _, p := range pubs {
		_ = p.c.ws.c.SetWriteDeadline(deadline.Add(100 * time.Millisecond))
	}
	defer func() {
		for _, p := range pubs {
			_ = p.c.ws.c.SetWriteDeadline(time.Time{})
		}
	}()
	batchMax := int64(max(maxPubBatch, 1))
	for w := range workers {
		var mine []publisher
		for j := w; j < len(pubs); j += workers {
			mine = append(mine, pubs[j])
		}
		wrate := rate / float64(workers)
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := newPayload(size)
			start := time.Now()
			var n int64
			k := 0
			for {
				now := time.Now()
				if now.After(deadline) || ctx.Err() != nil {
					return
				}
				budget := batchMax
				if wrate > 0 {
					due := int64(float64(now.Sub(start))/float64(time.Second)*wrate) + 1 - n
					if due <= 0 {
						time.Sleep(time.Duration(float64(n)/wrate*float64(time.Second)) - now.Sub(start) + 20*time.Microsecond)
						continue
					}
					budget = min(budget, due)
				}
				if window > 0 {
					// Wait for room for a whole batch (or half the window), so
					// the batches do not shrink to a message or two.
					room := int64(window) - (sent.Load()*perMsg-delivered())/max(perMsg, 1)
					if room <= 0 || room < min(budget, max(int64(window)/2, 1)) {
						time.Sleep(20 * time.Microsecond)
						continue
					}
					budget = min(budget, room)
				}
				// One publisher: one write of the whole batch. Several: one
				// message each, round-robin.
				for budget > 0 {
					p := mine[k%len(mine)]
					k++
					m := int64(1)
					if len(mine) == 1 {
						m = budget
					}
					done, err := p.c.PublishBatch(p.subject, payload, int(m))
					n += int64(done)
					sent.Add(int64(done))
					budget -= m
					if err != nil {
						if errs.Add(1) > 1000 || time.Now().After(deadline) {
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	return errs.Load()
}
