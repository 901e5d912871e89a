package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runPaced is fan-out under real traffic: cfg.Conns subscribers of one
// subject and cfg.Pubs publishers, each publisher sending one message per
// WebSocket frame and one frame per write, paced evenly (no pipelining: a
// server gets no batch it does not make itself). Read the subscribers with
// -recv goroutine (a plain goroutine-per-connection client) or epoll.
//
// The publish rate goes up in steps (-steps, messages/s in total, -step
// long each). A step is sustained when at least 95% of the deliveries its
// messages should cause arrive within the step; the run stops after the
// first step that is not (or that left a backlog). For every step it
// reports deliveries/s, end-to-end latency, and the CPU time per delivery
// of the server and of the load generator itself, so a result that only a
// batching loader could produce shows as loader CPU.
func runPaced(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	rates, err := parseRates(cfg.StepsArg)
	if err != nil {
		return nil, err
	}
	npubs := max(cfg.Pubs, 1)
	n := min(cfg.Conns, cfg.MaxConns-npubs)
	const subject = "bench.paced"
	var hs handshakeStats
	var subs subStats
	scfg := *cfg
	scfg.Rate = rates[len(rates)-1] // latency sampling for the highest rate
	ss, err := openSubscribers(ctx, &scfg, t, 0, n, func(int) string { return subject }, "paced subscribers", &hs, &subs)
	if err != nil {
		return nil, err
	}
	defer ss.close()
	pubs := make([]*client, npubs)
	for p := range pubs {
		pc, err := dialOne(ctx, t, n+p, "", &hs)
		if err != nil {
			closePubs(pubs)
			return nil, fmt.Errorf("publisher %d: %w", p, err)
		}
		pc.seq = uint64(p) * pubSeqBase
		pubs[p] = pc
		go func() { _ = pc.readLoop(func([]byte) {}, nil) }()
	}
	defer closePubs(pubs)
	fmt.Printf("paced: %d subscribers ready (%d failed; receive path %s), %d publishers, one message per frame and per write, %d-byte payloads; steps %v msgs/s of %v\n",
		ss.ready, hs.Failed.Load(), cfg.Recv, npubs, max(cfg.Payload, minPayload), rates, cfg.Step)
	time.Sleep(500 * time.Millisecond)

	var sent atomic.Int64
	var steps []map[string]any
	var best map[string]any
	for _, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		st, ok := pacedStep(ctx, cfg, t, pubs, subject, rate, ss.ready, &subs, &sent)
		steps = append(steps, st)
		if !ok {
			break
		}
		best = st
	}
	res := map[string]any{
		"subscribers_ready": ss.ready,
		"publishers":        npubs,
		"handshake":         hs.summary(),
		"steps":             steps,
		"subscribers":       subs.summary(),
	}
	if best != nil {
		res["sustained_deliveries_per_s"] = best["delivered_per_s"]
		res["sustained_msgs_per_s"] = best["rate"]
		res["sustained_server_us_per_delivery"] = best["server_us_per_delivery"]
		res["sustained_loader_us_per_delivery"] = best["loader_us_per_delivery"]
		fmt.Printf("paced: sustained %.0f deliveries/s (%v msgs/s x %d): server %.3f us, loader %.3f us CPU per delivery\n",
			best["delivered_per_s"], best["rate"], ss.ready, best["server_us_per_delivery"], best["loader_us_per_delivery"])
	} else {
		fmt.Println("paced: no step sustained")
	}
	ss.seqSummary(res, func(int) uint64 {
		var total uint64
		for p, pc := range pubs {
			total += pc.seq - uint64(p)*pubSeqBase
		}
		return total
	})
	return res, nil
}

// pacedStep publishes at rate messages/s in total for cfg.Step and
// reports the step; ok when it was sustained and its backlog drained.
func pacedStep(ctx context.Context, cfg *config, t *target, pubs []*client, subject string, rate float64,
	nsubs int, subs *subStats, sent *atomic.Int64) (map[string]any, bool) {
	before := sampleServer(t)
	self0 := readCPU(selfPID)
	lat0 := subs.Lat.Snapshot()
	d0 := subs.Delivered.Load()
	s0 := sent.Load()
	alive0 := subs.Alive.Load()
	cpus0 := readCPUTimes()
	start := time.Now()
	end := start.Add(cfg.Step)
	var wg sync.WaitGroup
	var errs atomic.Int64
	per := rate / float64(len(pubs))
	for p, pc := range pubs {
		// Spread the publishers' sends evenly over each interval.
		off := time.Duration(float64(p) / rate * float64(time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			pacedPublisher(ctx, pc, subject, cfg.Payload, per, start.Add(off), end, sent, &errs)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	dStep := subs.Delivered.Load() - d0
	after := sampleServer(t)
	selfCPU := readCPU(selfPID) - self0
	cpus := cpuBusy(cpus0, readCPUTimes())
	lat := subs.Lat.Snapshot().Sub(lat0)
	published := sent.Load() - s0
	want := published * int64(nsubs)
	frac := 0.0
	if want > 0 {
		frac = float64(dStep) / float64(want)
	}
	ok := frac >= 0.95 && errs.Load() == 0
	// Drain what the step left before the next one starts.
	total := sent.Load() * int64(nsubs)
	drainEnd := time.Now().Add(10 * time.Second)
	last, lastChange := subs.Delivered.Load(), time.Now()
	for time.Now().Before(drainEnd) && subs.Delivered.Load() < total && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if d := subs.Delivered.Load(); d != last {
			last, lastChange = d, time.Now()
		} else if time.Since(lastChange) > 2*time.Second {
			break
		}
	}
	drained := subs.Delivered.Load() >= total
	if !drained || subs.Alive.Load() < alive0 {
		ok = false
	}
	sd := serverDelta(before, after)
	srvCPU := sd["cpu_s"].(float64)
	perDel := func(cpu float64) float64 {
		if dStep == 0 {
			return 0
		}
		return round(cpu/float64(dStep)*1e6, 3)
	}
	st := map[string]any{
		"rate":                   rate,
		"published":              published,
		"published_per_s":        round(float64(published)/el.Seconds(), 1),
		"publish_errors":         errs.Load(),
		"expected_deliveries":    want,
		"delivered_in_step":      dStep,
		"delivered_fraction":     round(frac, 4),
		"delivered_per_s":        round(float64(dStep)/el.Seconds(), 0),
		"latency":                lat.Summary(),
		"server":                 sd,
		"server_cpu_s":           srvCPU,
		"loader_cpu_s":           round(selfCPU.Seconds(), 3),
		"server_us_per_delivery": perDel(srvCPU),
		"loader_us_per_delivery": perDel(selfCPU.Seconds()),
		"cpus":                   cpus,
		"drained":                drained,
		"subs_alive":             subs.Alive.Load(),
		"sustained":              ok,
	}
	verdict := "sustained"
	if !ok {
		verdict = "NOT sustained"
	}
	if m, ok := sd["metrics"].(map[string]any); ok {
		verdict += fmt.Sprintf(" [server: %v frames/write, %v write stalls]", m["frames_per_write"], m["arq_write_stalls_total_delta"])
	}
	for i, c := range cpus {
		verdict += fmt.Sprintf(" cpu%d %.0f%% (softirq %.0f%%, steal %.0f%%)", i, 100*c["busy"], 100*c["softirq"], 100*c["steal"])
	}
	fmt.Printf("  step %6.0f msgs/s: sent %d (%.0f/s), %d of %d delivered in the step (%.1f%%), %.3fM deliveries/s; p50 %v p99 %v; server CPU %.2fs (%.3f us/delivery), loader CPU %.2fs (%.3f us/delivery); %s\n",
		rate, published, float64(published)/el.Seconds(), dStep, want, 100*frac, float64(dStep)/el.Seconds()/1e6,
		lat.Quantile(0.5), lat.Quantile(0.99), srvCPU, perDel(srvCPU), selfCPU.Seconds(), perDel(selfCPU.Seconds()), verdict)
	return st, ok
}

// pacedPublisher sends rate messages/s on c from start until end, one
// message per frame and one frame per write; when it falls behind, what is
// due is sent in consecutive writes, never in one.
func pacedPublisher(ctx context.Context, c *client, subject string, size int, rate float64, start, end time.Time,
	sent, errs *atomic.Int64) {
	_ = c.ws.c.SetWriteDeadline(end.Add(time.Second))
	defer func() { _ = c.ws.c.SetWriteDeadline(time.Time{}) }()
	payload := newPayload(size)
	if d := time.Until(start); d > 0 {
		time.Sleep(d)
	}
	var k int64
	for {
		now := time.Now()
		if !now.Before(end) || ctx.Err() != nil {
			return
		}
		due := int64(now.Sub(start).Seconds()*rate) + 1
		if k >= due {
			time.Sleep(time.Until(start.Add(time.Duration(float64(k) / rate * float64(time.Second)))))
			continue
		}
		for ; k < due; k++ {
			if _, err := c.PublishBatch(subject, payload, 1); err != nil {
				errs.Add(1)
				return
			}
			sent.Add(1)
		}
	}
}

// parseRates parses "100,500,1000" (messages/s, each > 0).
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("loadgen: bad -steps entry %q", f)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("loadgen: -steps is empty")
	}
	return out, nil
}

// closePubs closes the publishers that connected.
func closePubs(pubs []*client) {
	for _, pc := range pubs {
		if pc != nil {
			pc.ws.Close(true)
		}
	}
}
