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
	err := c.readLoop(func(p []byte) {
		if each != nil {
			each()
		}
		now := time.Now().UnixNano()
		if ts, ok := payloadTime(p); ok {
			s.Lat.Record(time.Duration(now - ts))
		}
		s.Delivered.Add(1)
		s.LastRecv.Store(now)
	}, func(code string) { s.count(&s.errors, code) })
	s.Alive.Add(-1)
	s.count(&s.ends, describeClose(c.ws, err))
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

// publishLoop publishes from pubs round-robin at rate messages/s in total
// (0: as fast as the sockets take them) for d or until ctx ends, spread
// over up to 4 goroutines. Each payload starts with the send time. It
// returns the number sent and send errors.
//
// A write blocked by the server's backpressure ends at the deadline (the
// connection's write deadline is set to it). With window > 0 the loop is
// closed: it pauses while more than window messages per subscriber are
// in flight (sent*perMsg - delivered() > window*perMsg), which measures the
// throughput the server sustains without queueing without bound.
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
			for k := 0; ; k++ {
				now := time.Now()
				if now.After(deadline) || ctx.Err() != nil {
					return
				}
				if wrate > 0 {
					due := float64(now.Sub(start)) / float64(time.Second) * wrate
					if float64(n) >= due {
						time.Sleep(time.Duration((float64(n)+1-due)/wrate*float64(time.Second)) + 50*time.Microsecond)
						continue
					}
				}
				if window > 0 && sent.Load()*perMsg-delivered() > int64(window)*perMsg {
					time.Sleep(20 * time.Microsecond)
					continue
				}
				p := mine[k%len(mine)]
				fillPayload(payload, time.Now().UnixNano())
				if err := p.c.Publish(p.subject, payload); err != nil {
					errs.Add(1)
					if errs.Load() > 1000 {
						return
					}
					continue
				}
				n++
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	return errs.Load()
}
