package main

import (
	"context"
	"fmt"
	"time"
)

// runConnect ramps to cfg.Conns connections at cfg.ConnRate per second
// (upgrade + auth + WELCOME + subscribe + ACK) and reports the phases'
// latency and the handshakes per second achieved.
func runConnect(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	n := min(cfg.Conns, cfg.MaxConns)
	var hs handshakeStats
	var set connSet
	subject := func(i int) string { return fmt.Sprintf("bench.conn.%d", i) }
	var e *engine
	if cfg.Recv == "epoll" {
		var err error
		if e, err = newEngine(t, engineOpts{Loops: cfg.Loops, RBuf: 4096, HS: &hs, Pipeline: cfg.Pipeline}); err != nil {
			return nil, err
		}
	}
	before := sampleServer(t)
	selfCPU0 := readCPU(selfPID)
	var el time.Duration
	if e != nil {
		el = e.ramp(ctx, 0, n, cfg.ConnRate, cfg.Concurrency, subject, "connect", cfg.Progress)
	} else {
		el = ramp(ctx, t, rampOpts{
			N: n, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency, Subject: subject,
			OnReady: func(_ int, c *client) { set.add(c) },
			Label:   "connect", Progress: cfg.Progress,
		}, &hs)
	}
	selfCPU := readCPU(selfPID) - selfCPU0
	time.Sleep(time.Second)
	after := sampleServer(t)
	if e != nil {
		e.close()
	}
	closeAll(set.all(), true)
	rate := float64(hs.OK.Load()) / el.Seconds()
	res := map[string]any{
		"conns":            n,
		"ramp_s":           round(el.Seconds(), 3),
		"handshakes_per_s": round(rate, 1),
		"handshake":        hs.summary(),
		"server":           serverDelta(before, after),
		"loadgen_rss":      selfRSS(),
		"loadgen_cpu_s":    round(selfCPU.Seconds(), 2),
		"client":           cfg.Recv,
		"pipeline":         cfg.Pipeline,
	}
	fmt.Printf("connect: %d ok, %d failed in %.2fs = %.0f handshakes/s (client path %s, %d in flight)\n",
		hs.OK.Load(), hs.Failed.Load(), el.Seconds(), rate, cfg.Recv, cfg.Concurrency)
	printLat("  upgrade (101)", hs.Upgrade.Summary())
	printLat("  WELCOME", hs.Welcome.Summary())
	printLat("  sub ACK", hs.SubAck.Summary())
	if e := hs.errors(); len(e) > 0 {
		fmt.Printf("  errors: %v\n", e)
	}
	fmt.Printf("  server CPU %.2fs (includes 1s idle after the ramp), loadgen CPU %.2fs (ramp), server RSS %s -> %s\n", (after.CPU - before.CPU).Seconds(),
		res["loadgen_cpu_s"], mib(before.RSS), mib(after.RSS))
	return res, nil
}

// printLat prints one latency line.
func printLat(label string, s LatencySummary) {
	fmt.Printf("%-16s n=%-8d p50 %8.1fus  p90 %8.1fus  p99 %8.1fus  p99.9 %8.1fus  max %8.1fus\n",
		label, s.Count, s.P50Us, s.P90Us, s.P99Us, s.P999Us, s.MaxUs)
}
