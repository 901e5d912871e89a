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
	before := sampleServer(t)
	selfCPU0 := readCPU(selfPID)
	el := ramp(ctx, t, rampOpts{
		N: n, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency,
		Subject: func(i int) string { return fmt.Sprintf("bench.conn.%d", i) },
		OnReady: func(_ int, c *client) { set.add(c) },
		Label:   "connect", Progress: cfg.Progress,
	}, &hs)
	time.Sleep(time.Second)
	after := sampleServer(t)
	closeAll(set.all(), true)
	rate := float64(hs.OK.Load()) / el.Seconds()
	res := map[string]any{
		"conns":            n,
		"ramp_s":           round(el.Seconds(), 3),
		"handshakes_per_s": round(rate, 1),
		"handshake":        hs.summary(),
		"server":           serverDelta(before, after),
		"loadgen_rss":      selfRSS(),
		"loadgen_cpu_s":    round((readCPU(selfPID) - selfCPU0).Seconds(), 2),
	}
	fmt.Printf("connect: %d ok, %d failed in %.2fs = %.0f handshakes/s\n", hs.OK.Load(), hs.Failed.Load(), el.Seconds(), rate)
	printLat("  upgrade (101)", hs.Upgrade.Summary())
	printLat("  WELCOME", hs.Welcome.Summary())
	printLat("  sub ACK", hs.SubAck.Summary())
	if e := hs.errors(); len(e) > 0 {
		fmt.Printf("  errors: %v\n", e)
	}
	fmt.Printf("  server CPU %.2fs, loadgen CPU %.2fs, server RSS %s -> %s\n", (after.CPU - before.CPU).Seconds(),
		res["loadgen_cpu_s"], mib(before.RSS), mib(after.RSS))
	return res, nil
}

// printLat prints one latency line.
func printLat(label string, s LatencySummary) {
	fmt.Printf("%-16s n=%-8d p50 %8.1fus  p90 %8.1fus  p99 %8.1fus  p99.9 %8.1fus  max %8.1fus\n",
		label, s.Count, s.P50Us, s.P90Us, s.P99Us, s.P999Us, s.MaxUs)
}
