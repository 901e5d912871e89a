package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runSoak runs a mix for cfg.Duration: cfg.Idle idle subscribed
// connections, one publisher fanning out to cfg.Conns subscribers at
// cfg.Rate/10 messages/s, cfg.Pairs pairs sharing cfg.Rate*9/10 messages/s,
// and connect-subscribe-close churn at cfg.ChurnRate. It prints a progress
// line every cfg.Progress and records the series.
func runSoak(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	var hs, churnHS handshakeStats
	var set connSet
	var subs subStats
	next := 0
	rampN := func(n int, label string, subj func(int) string, onReady func(int, *client)) {
		ramp(ctx, t, rampOpts{First: next, N: n, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency,
			Subject: subj, OnReady: onReady, Label: label, Progress: cfg.Progress}, &hs)
		next += n
	}
	// Idle connections.
	var idle subStats
	rampN(cfg.Idle, "soak idle", func(i int) string { return fmt.Sprintf("bench.soak.idle.%d", i) },
		func(_ int, c *client) { set.add(c); go idle.run(c) })
	// Fan-out group.
	var fanReady atomic.Int64
	rampN(cfg.Conns, "soak fanout subs", func(int) string { return "bench.soak.fanout" },
		func(_ int, c *client) { set.add(c); fanReady.Add(1); go subs.run(c) })
	fanSubs := int(fanReady.Load())
	// Pairs.
	base := next
	rampN(cfg.Pairs, "soak pair subs", func(i int) string { return fmt.Sprintf("bench.soak.pair.%d", i-base) },
		func(_ int, c *client) { set.add(c); go subs.run(c) })
	pairPubs := make([]publisher, cfg.Pairs+1) // the last one feeds the fan-out group
	pbase := next
	rampN(cfg.Pairs+1, "soak publishers", nil, func(i int, c *client) {
		set.add(c)
		go c.readLoop(func([]byte) {}, nil)
		subj := "bench.soak.fanout"
		if j := i - pbase; j < cfg.Pairs {
			subj = fmt.Sprintf("bench.soak.pair.%d", j)
		}
		pairPubs[i-pbase] = publisher{c, subj}
	})
	var fanPub []publisher
	var pubs []publisher
	for j, p := range pairPubs {
		if p.c == nil {
			continue
		}
		if j == cfg.Pairs {
			fanPub = append(fanPub, p)
		} else {
			pubs = append(pubs, p)
		}
	}
	fmt.Printf("soak: %d idle, %d fan-out subscribers, %d pairs, churn %.0f/s; %d connections; running %v\n",
		idle.Alive.Load(), fanSubs, len(pubs), cfg.ChurnRate, set.len(), cfg.Duration)

	before := sampleServer(t)
	selfCPU0 := readCPU(selfPID)
	var sent atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	// Churn.
	var churnOpen atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		var cw sync.WaitGroup
		defer cw.Wait()
		for k := 0; cfg.ChurnRate > 0 && ctx.Err() == nil; k++ {
			due := start.Add(time.Duration(float64(k) / cfg.ChurnRate * float64(time.Second)))
			if due.After(start.Add(cfg.Duration)) {
				return
			}
			time.Sleep(time.Until(due))
			if churnOpen.Load() >= 1000 {
				continue
			}
			churnOpen.Add(1)
			cw.Add(1)
			go func(i int) {
				defer cw.Done()
				defer churnOpen.Add(-1)
				c, err := dialOne(ctx, t, i, fmt.Sprintf("bench.soak.churn.%d", i%100), &churnHS)
				if err == nil {
					time.Sleep(cfg.Hold)
					c.ws.Close(true)
				}
			}(next + k)
		}
	}()
	// Publishers.
	var fanSent, pairSent atomic.Int64
	if len(fanPub) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publishLoop(ctx, fanPub, cfg.Rate/10, cfg.Duration, cfg.Payload, &fanSent)
		}()
	}
	if len(pubs) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publishLoop(ctx, pubs, cfg.Rate*9/10, cfg.Duration, cfg.Payload, &pairSent)
		}()
	}
	var series []map[string]any
	prev := subs.Lat.Snapshot()
	prevDel := int64(0)
	stop := progressTicker(cfg.Progress, func(el time.Duration) {
		cur := subs.Lat.Snapshot()
		iv := cur.Sub(prev)
		d := subs.Delivered.Load()
		rate := float64(d-prevDel) / cfg.Progress.Seconds()
		prev, prevDel = cur, d
		s := sampleServer(t)
		fmt.Printf("  soak %5.1fs: sent %d  delivered %d (%.0f/s)  p50 %v p99 %v max %v  churn ok %d fail %d  subs alive %d  idle alive %d  server RSS %s  loadgen RSS %s\n",
			el.Seconds(), fanSent.Load()+pairSent.Load(), d, rate, iv.Quantile(0.5), iv.Quantile(0.99), iv.Quantile(1),
			churnHS.OK.Load(), churnHS.Failed.Load(), subs.Alive.Load(), idle.Alive.Load(), mib(s.RSS), mib(selfRSS()))
		row := map[string]any{"t_s": round(el.Seconds(), 1), "delivered_per_s": round(rate, 0),
			"p50_us": us(iv.Quantile(0.5)), "p99_us": us(iv.Quantile(0.99)), "max_us": us(iv.Quantile(1)),
			"server_rss_bytes": s.RSS, "churn_ok": churnHS.OK.Load(), "churn_failed": churnHS.Failed.Load(),
			"subs_alive": subs.Alive.Load(), "idle_alive": idle.Alive.Load()}
		if s.Metrics != nil {
			row["server_conns"] = s.Metrics["arq_connections"]
		}
		series = append(series, row)
	})
	wg.Wait()
	stop()
	el := time.Since(start)
	time.Sleep(2 * time.Second) // drain
	after := sampleServer(t)
	sent.Store(fanSent.Load() + pairSent.Load())
	want := fanSent.Load()*int64(fanSubs) + pairSent.Load()
	res := map[string]any{
		"seconds":             round(el.Seconds(), 1),
		"idle_conns":          cfg.Idle,
		"fanout_subscribers":  fanSubs,
		"pairs":               len(pubs),
		"published":           sent.Load(),
		"expected_deliveries": want,
		"delivered":           subs.Delivered.Load(),
		"lost":                want - subs.Delivered.Load(),
		"delivered_per_s":     round(float64(subs.Delivered.Load())/el.Seconds(), 1),
		"subscribers":         subs.summary(),
		"idle":                idle.summary(),
		"churn":               churnHS.summary(),
		"setup":               hs.summary(),
		"server":              serverDelta(before, after),
		"loadgen_cpu_s":       round((readCPU(selfPID) - selfCPU0).Seconds(), 2),
		"loadgen_rss":         selfRSS(),
		"series":              series,
	}
	fmt.Printf("soak: %.0fs, published %d, delivered %d of %d (lost %d), churn %d ok / %d failed, idle alive %d of %d\n",
		el.Seconds(), sent.Load(), subs.Delivered.Load(), want, want-subs.Delivered.Load(), churnHS.OK.Load(),
		churnHS.Failed.Load(), idle.Alive.Load(), cfg.Idle)
	printLat("  end-to-end", subs.Lat.Summary())
	printLat("  churn sub ACK", churnHS.SubAck.Summary())
	fmt.Printf("  server RSS %s -> %s\n", mib(before.RSS), mib(after.RSS))
	closeAll(set.all(), true)
	return res, nil
}
