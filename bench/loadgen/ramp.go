package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// handshakeStats collects connection attempts: latency of each phase and
// failures by class.
type handshakeStats struct {
	Upgrade Hist // TCP connect + HTTP upgrade
	Welcome Hist // ... + WELCOME (NATS: INFO, CONNECT, PONG)
	SubAck  Hist // ... + SUB and its ACK
	OK      atomic.Int64
	Failed  atomic.Int64

	mu   sync.Mutex
	errs map[string]int
}

// fail counts a failed attempt by class.
func (h *handshakeStats) fail(err error) {
	h.Failed.Add(1)
	h.mu.Lock()
	if h.errs == nil {
		h.errs = map[string]int{}
	}
	h.errs[classify(err)]++
	h.mu.Unlock()
}

// errors returns the failure classes.
func (h *handshakeStats) errors() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.errs))
	for k, v := range h.errs {
		out[k] = v
	}
	return out
}

// summary returns the JSON form.
func (h *handshakeStats) summary() map[string]any {
	return map[string]any{
		"ok":         h.OK.Load(),
		"failed":     h.Failed.Load(),
		"errors":     h.errors(),
		"upgrade":    h.Upgrade.Summary(),
		"welcome":    h.Welcome.Summary(),
		"subscribed": h.SubAck.Summary(),
	}
}

// classify names an error for counting.
func classify(err error) string {
	var se ws.StatusError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("http_%d", int(se))
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_source_port"
	case errors.Is(err, syscall.EMFILE):
		return "too_many_files"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, errClosed):
		return "closed"
	case errors.Is(err, errServer):
		s := err.Error()
		return "server: " + s[:min(len(s), 80)]
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s[:min(len(s), 60)]
}

// dialOne connects client i, subscribes it to subject (if not ""), and
// records the phases in hs.
func dialOne(ctx context.Context, t *target, i int, subject string, hs *handshakeStats) (*client, error) {
	start := time.Now()
	c, ht, err := t.connect(ctx, i)
	if err != nil {
		hs.fail(err)
		return nil, err
	}
	if subject != "" {
		if err := c.Subscribe(subject); err != nil {
			c.ws.Close(true)
			hs.fail(err)
			return nil, err
		}
	}
	hs.Upgrade.Record(ht.Upgrade)
	hs.Welcome.Record(ht.Welcome)
	if subject != "" {
		hs.SubAck.Record(time.Since(start))
	}
	hs.OK.Add(1)
	return c, nil
}

// rampOpts configures ramp.
type rampOpts struct {
	First, N    int                    // connection numbers First .. First+N-1
	Rate        float64                // new connections per second; 0 unpaced
	Concurrency int                    // attempts in flight
	Subject     func(i int) string     // subject for connection i ("" none)
	OnReady     func(i int, c *client) // runs in the dialing goroutine
	Label       string                 // progress label
	Progress    time.Duration
}

// ramp opens connections as configured and returns when every attempt
// has finished (or ctx ends).
func ramp(ctx context.Context, t *target, o rampOpts, hs *handshakeStats) time.Duration {
	conc := max(o.Concurrency, 1)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	start := time.Now()
	stopProg := progressTicker(o.Progress, func(el time.Duration) {
		fmt.Printf("  %s: %6.1fs  ok %d  failed %d  p99 handshake %v\n", o.Label, el.Seconds(),
			hs.OK.Load(), hs.Failed.Load(), hs.Welcome.Snapshot().Quantile(0.99))
	})
	defer stopProg()
	for k := 0; k < o.N; k++ {
		if ctx.Err() != nil {
			break
		}
		if o.Rate > 0 {
			due := start.Add(time.Duration(float64(k) / o.Rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			subj := ""
			if o.Subject != nil {
				subj = o.Subject(i)
			}
			c, err := dialOne(ctx, t, i, subj, hs)
			if err == nil && o.OnReady != nil {
				o.OnReady(i, c)
			}
		}(o.First + k)
	}
	wg.Wait()
	return time.Since(start)
}

// progressTicker calls fn every d (from a goroutine) until the returned
// stop function runs. d <= 0 disables it.
func progressTicker(d time.Duration, fn func(elapsed time.Duration)) func() {
	if d <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() {
		defer wg.Done()
		tk := time.NewTicker(d)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				fn(time.Since(start))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
