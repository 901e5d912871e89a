package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// flowResult measures one publish phase.
type flowResult struct {
	sent      atomic.Int64
	pubErrors int64
	elapsed   time.Duration
}

// runFlow publishes from pubs for cfg.Duration at cfg.Rate, prints
// progress, waits for deliveries to drain (up to 5s) and summarizes.
// expectPer is how many deliveries one publish should cause.
func runFlow(ctx context.Context, cfg *config, t *target, label string, pubs []publisher, subs *subStats, expectPer int) map[string]any {
	var fr flowResult
	before := sampleServer(t)
	selfCPU0 := readCPU(selfPID)
	prev := subs.Lat.Snapshot()
	prevDel := int64(0)
	var series []map[string]any
	stop := progressTicker(cfg.Progress, func(el time.Duration) {
		cur := subs.Lat.Snapshot()
		iv := cur.Sub(prev)
		d := subs.Delivered.Load()
		rate := float64(d-prevDel) / cfg.Progress.Seconds()
		prev, prevDel = cur, d
		ss := sampleServer(t)
		rss := ss.RSS
		slowClosed := ss.Metrics["arq_slow_consumers_total"] - before.Metrics["arq_slow_consumers_total"]
		fmt.Printf("  %s: %5.1fs  sent %d  delivered %d (%.0f/s)  p50 %v  p99 %v  subs alive %d  server RSS %s  slow-closed %.0f\n",
			label, el.Seconds(), fr.sent.Load(), d, rate, iv.Quantile(0.5), iv.Quantile(0.99), subs.Alive.Load(), mib(rss), slowClosed)
		series = append(series, map[string]any{"t_s": round(el.Seconds(), 1), "delivered_per_s": round(rate, 0),
			"p50_us": us(iv.Quantile(0.5)), "p99_us": us(iv.Quantile(0.99)), "server_rss_bytes": rss,
			"subs_alive": subs.Alive.Load(), "server_slow_consumers_closed": slowClosed})
	})
	start := time.Now()
	fr.pubErrors = publishLoopWindow(ctx, pubs, cfg.Rate, cfg.Duration, cfg.Payload, &fr.sent,
		cfg.Window, int64(expectPer), subs.Delivered.Load)
	fr.elapsed = time.Since(start)
	stop()
	// Drain: wait until every expected delivery arrived or nothing arrives
	// for two seconds (at most 5s or the publishing time, whichever is
	// longer: a slow server may still be delivering a full window).
	sent := fr.sent.Load()
	want := sent * int64(expectPer)
	drainEnd := time.Now().Add(max(5*time.Second, cfg.Duration))
	last, lastChange := subs.Delivered.Load(), time.Now()
	for time.Now().Before(drainEnd) && subs.Delivered.Load() < want {
		time.Sleep(50 * time.Millisecond)
		if d := subs.Delivered.Load(); d != last {
			last, lastChange = d, time.Now()
		} else if time.Since(lastChange) > 2*time.Second {
			break
		}
	}
	after := sampleServer(t)
	delivered := subs.Delivered.Load()
	recvSpan := time.Duration(subs.LastRecv.Load() - start.UnixNano())
	if recvSpan < fr.elapsed {
		recvSpan = fr.elapsed
	}
	res := map[string]any{
		"published":           sent,
		"window":              cfg.Window,
		"publish_errors":      fr.pubErrors,
		"publish_s":           round(fr.elapsed.Seconds(), 3),
		"published_per_s":     round(float64(sent)/fr.elapsed.Seconds(), 1),
		"expected_deliveries": want,
		"delivered":           delivered,
		"lost":                want - (delivered - subs.Backward.Load()),
		"delivered_per_s":     round(float64(delivered)/recvSpan.Seconds(), 1),
		"subscribers":         subs.summary(),
		"server":              serverDelta(before, after),
		"loadgen_rss":         selfRSS(),
		"loadgen_cpu_s":       round((readCPU(selfPID) - selfCPU0).Seconds(), 2),
		"series":              series,
	}
	lat := subs.Lat.Summary()
	fmt.Printf("%s: published %d (%.0f/s), delivered %d of %d (%.0f/s), lost %d\n", label, sent,
		float64(sent)/fr.elapsed.Seconds(), delivered, want, float64(delivered)/recvSpan.Seconds(), want-(delivered-subs.Backward.Load()))
	printLat("  end-to-end", lat)
	sd := serverDelta(before, after)
	fmt.Printf("  server CPU %.2fs (%.0f%% of a core), loadgen CPU %.2fs, server RSS %s -> %s\n", sd["cpu_s"],
		100*sd["cpu_util"].(float64), res["loadgen_cpu_s"], mib(before.RSS), mib(after.RSS))
	if m, ok := sd["metrics"].(map[string]any); ok {
		fmt.Printf("  gateway route p50 %vus p99 %vus p99.9 %vus; slow consumers %v, dropped %v, error frames %v\n",
			m["route_p50_us"], m["route_p99_us"], m["route_p99.9_us"], m["arq_slow_consumers_total_delta"],
			m["arq_messages_dropped_total_delta"], m["arq_error_frames_total_delta"])
	}
	return res
}

// subscribers is a set of subscribing connections opened by
// openSubscribers: the lean engine's (default), or goroutine-per-connection
// readers.
type subscribers struct {
	e      *engine // nil for -recv legacy
	legacy connSet // -recv legacy and goroutine: the clients
	ready  int     // handshakes that succeeded
	wg     sync.WaitGroup
}

// openSubscribers connects n subscribers (connection numbers first..) to
// subject(i), counting deliveries in subs, with the receive path of
// cfg.Recv:
//
//	epoll      the lean engine: raw sockets, -loops event loops, -rbuf reads
//	goroutine  a goroutine per connection reading -rbuf bytes at a time,
//	           frames parsed in place (the same parser as epoll)
//	legacy     a goroutine per connection with a 1 KiB bufio reader and a
//	           payload copy per frame (the load generator before 2026-11-27)
func openSubscribers(ctx context.Context, cfg *config, t *target, first, n int, subject func(int) string,
	label string, hs *handshakeStats, subs *subStats) (*subscribers, error) {
	s := &subscribers{}
	switch cfg.Recv {
	case "epoll", "goroutine":
		e, err := newEngine(t, engineOpts{Loops: cfg.Loops, RBuf: cfg.RBuf, Sample: cfg.sample(n), HS: hs, Subs: subs})
		if err != nil {
			return nil, err
		}
		s.e = e
		if cfg.Recv == "epoll" {
			e.ramp(ctx, first, n, cfg.ConnRate, cfg.Concurrency, subject, label, cfg.Progress)
			s.ready = int(e.ready.Load())
			return s, nil
		}
		ramp(ctx, t, rampOpts{
			First: first, N: n, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency, Subject: subject,
			OnReady: func(i int, c *client) {
				s.legacy.add(c)
				s.wg.Add(1)
				go func() { defer s.wg.Done(); e.adopt(c, i, cfg.RBuf) }()
			},
			Label: label, Progress: cfg.Progress,
		}, hs)
	case "legacy":
		ramp(ctx, t, rampOpts{
			First: first, N: n, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency, Subject: subject,
			OnReady: func(_ int, c *client) { s.legacy.add(c); go subs.run(c) },
			Label:   label, Progress: cfg.Progress,
		}, hs)
	default:
		return nil, fmt.Errorf("unknown -recv %q", cfg.Recv)
	}
	s.ready = s.legacy.len()
	return s, nil
}

// stopReceiving ends every receiver (event loops stopped, goroutine
// readers' connections reset). Idempotent.
func (s *subscribers) stopReceiving() {
	if s.e != nil {
		s.e.halt()
	}
	closeAll(s.legacy.all(), true)
	s.wg.Wait()
}

// close resets every subscriber.
func (s *subscribers) close() {
	s.stopReceiving()
	if s.e != nil {
		s.e.close()
	}
}

// seqSummary stops receiving and adds the per-subscriber sequence check
// (lean paths only).
func (s *subscribers) seqSummary(res map[string]any, sentBy func(i int) uint64) {
	if s.e == nil {
		return
	}
	s.stopReceiving()
	ss := s.e.seqSummary(sentBy)
	res["sequence"] = ss
	fmt.Printf("  sequence check: %d messages missing at %d subscribers (max %d at one); gaps %v, backward %v\n",
		ss["lost"], ss["subscribers_with_loss"], ss["max_lost_per_subscriber"],
		res["subscribers"].(map[string]any)["seq_gaps"], res["subscribers"].(map[string]any)["seq_backward"])
}

// runFanout connects cfg.Conns subscribers to one subject and one
// publisher, publishes at cfg.Rate for cfg.Duration, and reports delivered
// messages per second and end-to-end latency.
func runFanout(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	n := min(cfg.Conns, cfg.MaxConns-1)
	const subject = "bench.fanout"
	var hs handshakeStats
	var subs subStats
	ss, err := openSubscribers(ctx, cfg, t, 0, n, func(int) string { return subject }, "fanout subscribers", &hs, &subs)
	if err != nil {
		return nil, err
	}
	defer ss.close()
	pc, err := dialOne(ctx, t, n, "", &hs)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	pubEnd := make(chan string, 1)
	go func() { pubEnd <- describeClose(pc.ws, pc.readLoop(func([]byte) {}, nil)) }()
	fmt.Printf("fanout: %d subscribers ready (%d failed; receive path %s); publishing %d-byte payloads at %v/s for %v\n",
		ss.ready, hs.Failed.Load(), cfg.Recv, max(cfg.Payload, minPayload), rateStr(cfg.Rate), cfg.Duration)
	time.Sleep(500 * time.Millisecond)
	res := runFlow(ctx, cfg, t, "fanout", []publisher{{pc, subject}}, &subs, ss.ready)
	res["subscribers_ready"] = ss.ready
	res["handshake"] = hs.summary()
	ss.seqSummary(res, func(int) uint64 { return pc.seq })
	select {
	case e := <-pubEnd:
		res["publisher_closed"] = e
		fmt.Printf("  WARNING: the publisher's connection ended during the run: %s\n", e)
	default:
	}
	pc.ws.Close(true)
	return res, nil
}

// runPubsub connects cfg.Pairs publisher/subscriber pairs, each pair on
// its own subject, and publishes cfg.Rate messages/s in total.
func runPubsub(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	p := min(cfg.Pairs, cfg.MaxConns/2)
	var hs handshakeStats
	var pubSet connSet
	var subs subStats
	ss, err := openSubscribers(ctx, cfg, t, 0, p, func(i int) string { return fmt.Sprintf("bench.pair.%d", i) },
		"pubsub subscribers", &hs, &subs)
	if err != nil {
		return nil, err
	}
	defer ss.close()
	pubs := make([]publisher, p)
	ramp(ctx, t, rampOpts{
		First: p, N: p, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency,
		OnReady: func(i int, c *client) {
			pubSet.add(c)
			pubs[i-p] = publisher{c, fmt.Sprintf("bench.pair.%d", i-p)}
			go c.readLoop(func([]byte) {}, nil)
		},
		Label: "pubsub publishers", Progress: cfg.Progress,
	}, &hs)
	var ready []publisher
	for _, pb := range pubs {
		if pb.c != nil {
			ready = append(ready, pb)
		}
	}
	if len(ready) == 0 {
		return nil, fmt.Errorf("no publisher connected: %v", hs.errors())
	}
	fmt.Printf("pubsub: %d pairs (%d handshakes failed); publishing %d-byte payloads at %v/s in total for %v\n",
		len(ready), hs.Failed.Load(), max(cfg.Payload, minPayload), rateStr(cfg.Rate), cfg.Duration)
	time.Sleep(500 * time.Millisecond)
	res := runFlow(ctx, cfg, t, "pubsub", ready, &subs, 1)
	res["pairs"] = len(ready)
	res["handshake"] = hs.summary()
	ss.seqSummary(res, func(i int) uint64 {
		if pubs[i].c == nil {
			return 0
		}
		return pubs[i].c.seq
	})
	closeAll(pubSet.all(), true)
	return res, nil
}

func rateStr(r float64) string {
	if r <= 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f", r)
}
