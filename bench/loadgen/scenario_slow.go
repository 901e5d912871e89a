package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// runSlow connects cfg.Conns subscribers to one subject, cfg.Slow of
// which stop reading after subscribing. It publishes at cfg.Rate
// for cfg.Duration, sampling the server's RSS and the readers' latency
// each second, then lets the slow ones read again to learn how each one
// ended: closed with SLOW_CONSUMER / 1008, or still open (messages dropped
// or never filled).
func runSlow(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	n := min(cfg.Conns, cfg.MaxConns-1)
	nSlow := min(cfg.Slow, n)
	const subject = "bench.slow"
	var hs handshakeStats
	var set connSet
	var fast subStats
	slow := make([]*client, nSlow)
	ramp(ctx, t, rampOpts{
		N: n, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency,
		Subject: func(int) string { return subject },
		OnReady: func(i int, c *client) {
			set.add(c)
			if i < nSlow {
				slow[i] = c
				return
			}
			go fast.run(c)
		},
		Label: "slow subscribers", Progress: cfg.Progress,
	}, &hs)
	pc, err := dialOne(ctx, t, n, "", &hs)
	if err != nil {
		closeAll(set.all(), true)
		return nil, fmt.Errorf("publisher: %w", err)
	}
	pubEnd := make(chan string, 1)
	go func() { pubEnd <- describeClose(pc.ws, pc.readLoop(func([]byte) {}, nil)) }()
	fmt.Printf("slow: %d readers + %d non-readers; publishing %d-byte payloads at %v/s for %v\n",
		fast.Alive.Load(), nSlow, cfg.Payload, rateStr(cfg.Rate), cfg.Duration)
	time.Sleep(500 * time.Millisecond)
	cfg2 := *cfg
	cfg2.Progress = time.Second
	res := runFlow(ctx, &cfg2, t, "slow", []publisher{{pc, subject}}, &fast, n-nSlow-int(hs.Failed.Load()))

	// Let the slow subscribers read again and see how each ended.
	var ends subStats
	var wg sync.WaitGroup
	for _, c := range slow {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Read until the server closes, or nothing arrives for 3s.
			_ = c.ws.c.SetReadDeadline(time.Now().Add(3 * time.Second))
			ends.runWith(c, func() { _ = c.ws.c.SetReadDeadline(time.Now().Add(3 * time.Second)) })
		}()
	}
	wg.Wait()
	sm := ends.summary()
	res["slow_subscribers"] = map[string]any{
		"count":         nSlow,
		"read_loop_end": sm["read_loop_end"],
		"error_frames":  sm["error_frames"],
		"drained_msgs":  sm["delivered"],
		"timeout_means": "still open after draining what was queued (not closed by the server)",
	}
	res["fast_subscribers"] = n - nSlow
	res["handshake"] = hs.summary()
	fmt.Printf("slow: the %d non-readers ended: %v, error frames %v (timeout = still open)\n", nSlow, sm["read_loop_end"], sm["error_frames"])
	select {
	case e := <-pubEnd:
		res["publisher_closed"] = e
		fmt.Printf("  WARNING: the publisher's connection ended during the run: %s\n", e)
	default:
	}
	pc.ws.Close(true)
	closeAll(set.all(), true)
	return res, nil
}
