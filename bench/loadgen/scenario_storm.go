package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// runStorm has two phases. Churn: for cfg.Duration, cfg.ChurnRate times a
// second a connection is opened, subscribed, held for cfg.Hold and reset.
// Reconnect: cfg.Reconnect connections are opened, then all reset at once
// and reconnected at once (each retrying up to 3 times after a random
// 100-500ms back-off), the way clients of a dead node come back.
func runStorm(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	res := map[string]any{}
	before := sampleServer(t)

	// Phase 1: churn.
	var churn handshakeStats
	var inflight atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stop := progressTicker(cfg.Progress, func(el time.Duration) {
		fmt.Printf("  churn: %5.1fs  ok %d  failed %d  open %d  p99 %v\n", el.Seconds(), churn.OK.Load(),
			churn.Failed.Load(), inflight.Load(), churn.SubAck.Snapshot().Quantile(0.99))
	})
	churnN := int(cfg.ChurnRate * cfg.Duration.Seconds())
	skipped := 0
	for k := 0; k < churnN && ctx.Err() == nil; k++ {
		due := start.Add(time.Duration(float64(k) / cfg.ChurnRate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if inflight.Load() >= int64(cfg.MaxConns) {
			skipped++
			continue
		}
		inflight.Add(1)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer inflight.Add(-1)
			c, err := dialOne(ctx, t, i, fmt.Sprintf("bench.churn.%d", i%1000), &churn)
			if err != nil {
				return
			}
			time.Sleep(cfg.Hold)
			c.ws.Close(true)
		}(k)
	}
	wg.Wait()
	stop()
	churnEl := time.Since(start)
	res["churn"] = map[string]any{
		"attempts": churnN, "skipped_at_max_conns": skipped, "seconds": round(churnEl.Seconds(), 2),
		"cycles_per_s": round(float64(churn.OK.Load())/churnEl.Seconds(), 1), "handshake": churn.summary(),
	}
	fmt.Printf("storm churn: %d cycles in %.1fs (%.0f/s), %d failed\n", churn.OK.Load(), churnEl.Seconds(),
		float64(churn.OK.Load())/churnEl.Seconds(), churn.Failed.Load())
	printLat("  sub ACK", churn.SubAck.Summary())

	// Phase 2: K connections, reset and reconnected at once.
	k := min(cfg.Reconnect, cfg.MaxConns)
	if cfg.Recv == "epoll" {
		return stormEpoll(ctx, cfg, t, k, before, res)
	}
	var setup handshakeStats
	conns := make([]*client, k)
	ramp(ctx, t, rampOpts{
		N: k, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency,
		Subject: func(i int) string { return fmt.Sprintf("bench.storm.%d", i%1000) },
		OnReady: func(i int, c *client) { conns[i] = c },
		Label:   "storm setup", Progress: cfg.Progress,
	}, &setup)
	time.Sleep(time.Second)
	mid := sampleServer(t)
	fmt.Printf("storm: %d connections up (%d failed); dropping and reconnecting all at once\n", setup.OK.Load(), setup.Failed.Load())
	var first, final handshakeStats
	var retries, gaveUp atomic.Int64
	var lastOK atomic.Int64
	gate := make(chan struct{})
	selfCPU0 := readCPU(selfPID)
	t0 := time.Now()
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			c.ws.Close(true)
			subj := fmt.Sprintf("bench.storm.%d", i%1000)
			for attempt := 0; attempt < 4; attempt++ {
				hs := &final
				if attempt == 0 {
					hs = &first
				}
				nc, err := dialOne(ctx, t, i+k, subj, hs)
				if err == nil {
					conns[i] = nc
					lastOK.Store(int64(time.Since(t0)))
					return
				}
				conns[i] = nil
				if attempt == 3 || ctx.Err() != nil {
					gaveUp.Add(1)
					return
				}
				retries.Add(1)
				time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
			}
		}()
	}
	stop = progressTicker(cfg.Progress, func(el time.Duration) {
		fmt.Printf("  reconnect: %5.1fs  first-try ok %d  failed %d  retries %d  retried ok %d\n", el.Seconds(),
			first.OK.Load(), first.Failed.Load(), retries.Load(), final.OK.Load())
	})
	close(gate)
	wg.Wait()
	stop()
	all := time.Duration(lastOK.Load())
	selfCPU := readCPU(selfPID) - selfCPU0
	time.Sleep(time.Second)
	after := sampleServer(t)
	reconnected := first.OK.Load() + final.OK.Load()
	res["reconnect"] = map[string]any{
		"connections": setup.OK.Load(), "reconnected": reconnected, "gave_up": gaveUp.Load(),
		"retries": retries.Load(), "all_back_s": round(all.Seconds(), 3),
		"reconnects_per_s": round(float64(reconnected)/all.Seconds(), 1),
		"first_attempt":    first.summary(), "retried_attempts": final.summary(),
		"setup": setup.summary(), "loadgen_cpu_s": round(selfCPU.Seconds(), 2),
	}
	res["server_before_storm"] = serverDelta(before, mid)
	res["server"] = serverDelta(mid, after)
	res["loadgen_rss"] = selfRSS()
	fmt.Printf("storm reconnect: %d of %d back in %.2fs (%.0f/s); first-attempt failures %d %v; retries %d; gave up %d\n",
		reconnected, setup.OK.Load(), all.Seconds(), float64(reconnected)/all.Seconds(), first.Failed.Load(),
		first.errors(), retries.Load(), gaveUp.Load())
	printLat("  first WELCOME", first.Welcome.Summary())
	printLat("  first sub ACK", first.SubAck.Summary())
	fmt.Printf("  server CPU %.2fs, loadgen CPU %.2fs, server RSS %s -> %s\n", (after.CPU - mid.CPU).Seconds(),
		selfCPU.Seconds(), mib(mid.RSS), mib(after.RSS))
	var open []*client
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}
	closeAll(open, true)
	return res, nil
}

// stormEpoll is phase 2 on the lean client (-recv epoll): k connections
// made by an engine, all reset at once (SO_LINGER 0), and redialled at once
// by a second engine, every handshake in flight together. There are no
// application retries: a SYN the listen queue drops is retransmitted by
// the kernel, and a handshake that takes longer than the timeout fails.
func stormEpoll(ctx context.Context, cfg *config, t *target, k int, before serverSample, res map[string]any) (map[string]any, error) {
	subject := func(i int) string { return fmt.Sprintf("bench.storm.%d", i%1000) }
	var setup, again handshakeStats
	e1, err := newEngine(t, engineOpts{Loops: cfg.Loops, RBuf: 4096, HS: &setup})
	if err != nil {
		return nil, err
	}
	e1.ramp(ctx, 0, k, cfg.ConnRate, cfg.Concurrency, subject, "storm setup", cfg.Progress)
	time.Sleep(time.Second)
	mid := sampleServer(t)
	fmt.Printf("storm: %d connections up (%d failed); dropping and reconnecting all at once\n", setup.OK.Load(), setup.Failed.Load())
	e2, err := newEngine(t, engineOpts{Loops: cfg.Loops, RBuf: 4096, HS: &again})
	if err != nil {
		e1.close()
		return nil, err
	}
	selfCPU0 := readCPU(selfPID)
	t0 := time.Now()
	e1.close()
	n := int(setup.OK.Load())
	e2.ramp(ctx, k, n, 0, n, subject, "reconnect", cfg.Progress)
	all := time.Since(t0)
	selfCPU := readCPU(selfPID) - selfCPU0
	time.Sleep(time.Second)
	after := sampleServer(t)
	e2.close()
	reconnected := again.OK.Load()
	res["reconnect"] = map[string]any{
		"connections": setup.OK.Load(), "reconnected": reconnected, "failed": again.Failed.Load(),
		"retries": 0, "all_back_s": round(all.Seconds(), 3),
		"reconnects_per_s": round(float64(reconnected)/all.Seconds(), 1),
		"first_attempt":    again.summary(), "setup": setup.summary(),
		"loadgen_cpu_s": round(selfCPU.Seconds(), 2), "client": "epoll",
	}
	res["server_before_storm"] = serverDelta(before, mid)
	res["server"] = serverDelta(mid, after)
	res["loadgen_rss"] = selfRSS()
	fmt.Printf("storm reconnect: %d of %d back in %.2fs (%.0f/s), all dialled at once (epoll client, no retries); failures %d %v\n",
		reconnected, setup.OK.Load(), all.Seconds(), float64(reconnected)/all.Seconds(), again.Failed.Load(), again.errors())
	printLat("  first WELCOME", again.Welcome.Summary())
	printLat("  first sub ACK", again.SubAck.Summary())
	fmt.Printf("  server CPU %.2fs, loadgen CPU %.2fs, server RSS %s -> %s\n", (after.CPU - mid.CPU).Seconds(),
		selfCPU.Seconds(), mib(mid.RSS), mib(after.RSS))
	return res, nil
}
