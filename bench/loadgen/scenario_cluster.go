package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runCluster is the paced scenario (see runPaced) over the nodes of a
// cluster (-cluster N, or -url with one URL per node): -node-subs
// subscribers on each node (default -conns each), all on one subject,
// and -pubs publishers on node -pub-node, each sending one message per
// WebSocket frame and one frame per write, paced evenly. The rate goes up
// in -steps (messages/s in total, -step long each); a step is sustained
// when at least 95% of the deliveries its messages should cause, over all
// nodes, arrive within the step and the backlog drains (the run stops
// after the first that is not).
//
// Latency and deliveries are kept per node, so one run gives the
// publisher's own node (same-node delivery) and the others (cross-node:
// through NATS) side by side. Before the first step a probe connection on
// the publisher's node publishes until one probe reaches every
// subscriber of every node (interest has spread over the cluster's
// routes); probes are not counted in the steps or the sequence check.
func runCluster(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	rates, err := parseRates(cfg.StepsArg)
	if err != nil {
		return nil, err
	}
	nodes := len(t.URLs)
	counts, err := parseNodeSubs(clusterFlags.nodeSubs, nodes, cfg.Conns)
	if err != nil {
		return nil, err
	}
	pubNode := clusterFlags.pubNode
	if pubNode < 0 || pubNode >= nodes {
		return nil, fmt.Errorf("loadgen: -pub-node %d: the cluster has %d nodes", pubNode, nodes)
	}
	npubs := max(cfg.Pubs, 1)
	const subject = "bench.cluster"
	nodeTarget := func(k int) *target {
		nt := *t
		nt.URLs = []string{t.URLs[k]}
		return &nt
	}
	var hs handshakeStats
	groups := make([]*nodeGroup, nodes)
	defer func() {
		for _, g := range groups {
			if g != nil && g.ss != nil {
				g.ss.close()
			}
		}
	}()
	first := 0
	total := 0
	for k := range nodes {
		g := &nodeGroup{node: k}
		groups[k] = g
		if counts[k] == 0 {
			continue
		}
		scfg := *cfg
		scfg.Rate = rates[len(rates)-1] // latency sampling for the highest rate
		if scfg.Sample == 0 {
			// Sample by the total deliveries, as runPaced does for one node.
			scfg.Sample = scfg.sample(sumInts(counts))
		}
		g.ss, err = openSubscribers(ctx, &scfg, nodeTarget(k), first, counts[k], func(int) string { return subject },
			fmt.Sprintf("node %d subscribers", k), &hs, &g.subs)
		if err != nil {
			return nil, err
		}
		first += counts[k]
		g.ready = g.ss.ready
		total += g.ready
	}
	pt := nodeTarget(pubNode)
	pubs := make([]*client, npubs+1) // the last one is the probe
	for p := range pubs {
		pc, err := dialOne(ctx, pt, first+p, "", &hs)
		if err != nil {
			closePubs(pubs)
			return nil, fmt.Errorf("publisher %d: %w", p, err)
		}
		pc.seq = uint64(p) * pubSeqBase
		pubs[p] = pc
		go func() { _ = pc.readLoop(func([]byte) {}, nil) }()
	}
	defer closePubs(pubs)
	probe := pubs[npubs]
	pubs = pubs[:npubs]
	fmt.Printf("cluster: %d nodes, subscribers per node %v ready (%d failed; receive path %s), %d publishers on node %d, one message per frame and per write, %d-byte payloads; steps %v msgs/s of %v\n",
		nodes, readyCounts(groups), hs.Failed.Load(), cfg.Recv, npubs, pubNode, max(cfg.Payload, minPayload), rates, cfg.Step)
	probes, probeTime, err := clusterProbe(ctx, probe, subject, cfg.Payload, groups)
	if err != nil {
		return nil, err
	}
	fmt.Printf("cluster: probe %d reached every subscriber after %v\n", probes, probeTime.Round(time.Millisecond))
	gaps0 := make([]int64, nodes)
	for k, g := range groups {
		gaps0[k] = g.subs.Gaps.Load()
	}
	time.Sleep(300 * time.Millisecond)

	var sent atomic.Int64
	var steps []map[string]any
	var best map[string]any
	for _, rate := range rates {
		if ctx.Err() != nil {
			break
		}
		st, ok := clusterStep(ctx, cfg, t, pubs, subject, rate, groups, pubNode, &sent)
		steps = append(steps, st)
		if !ok {
			break
		}
		best = st
	}
	res := map[string]any{
		"nodes":             nodes,
		"pub_node":          pubNode,
		"subscribers":       readyCounts(groups),
		"subscribers_ready": total,
		"publishers":        npubs,
		"probes":            probes,
		"probe_ms":          round(float64(probeTime)/1e6, 1),
		"handshake":         hs.summary(),
		"steps":             steps,
		"processes":         clusterProcs,
	}
	if best != nil {
		res["sustained_deliveries_per_s"] = best["delivered_per_s"]
		res["sustained_msgs_per_s"] = best["rate"]
		res["sustained_server_us_per_delivery"] = best["server_us_per_delivery"]
		res["sustained_loader_us_per_delivery"] = best["loader_us_per_delivery"]
		fmt.Printf("cluster: sustained %.0f deliveries/s (%v msgs/s x %d subscribers on %d nodes): server %.3f us, loader %.3f us CPU per delivery\n",
			best["delivered_per_s"], best["rate"], total, nodes, best["server_us_per_delivery"], best["loader_us_per_delivery"])
	} else {
		fmt.Println("cluster: no step sustained")
	}
	// Sequence check per node, of the publishers only (not the probe).
	var perNode []map[string]any
	for k, g := range groups {
		if g.ss == nil {
			continue
		}
		sm := g.subs.summary()
		sm["node"] = k
		sm["seq_gaps"] = g.subs.Gaps.Load() - gaps0[k]
		if g.ss.e != nil {
			g.ss.stopReceiving()
			var lost, with uint64
			for _, c := range g.ss.e.readyConns() {
				var want, got uint64
				for p, pc := range pubs {
					want += pc.seq - uint64(p)*pubSeqBase
					if p < len(c.seq.t) {
						got += c.seq.t[p].got
					}
				}
				if got < want {
					lost += want - got
					with++
				}
			}
			sm["seq_lost"] = lost
			sm["seq_subscribers_with_loss"] = with
			fmt.Printf("  node %d: sequence check: %d messages missing at %d subscribers; gaps %v, backward %v\n",
				k, lost, with, sm["seq_gaps"], sm["seq_backward"])
		}
		perNode = append(perNode, sm)
	}
	res["per_node"] = perNode
	return res, nil
}

// nodeGroup is the subscribers of one cluster node.
type nodeGroup struct {
	node  int
	ss    *subscribers
	subs  subStats
	ready int
}

func readyCounts(groups []*nodeGroup) []int {
	out := make([]int, len(groups))
	for k, g := range groups {
		out[k] = g.ready
	}
	return out
}

func sumInts(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// clusterProbe publishes one message every 100 ms on c until one of them
// reaches every ready subscriber of every group (at most 10 s). It
// returns how many it sent and how long that took.
func clusterProbe(ctx context.Context, c *client, subject string, size int, groups []*nodeGroup) (int, time.Duration, error) {
	payload := newPayload(size)
	start := time.Now()
	for n := 1; time.Since(start) < 10*time.Second && ctx.Err() == nil; n++ {
		before := make([]int64, len(groups))
		for k, g := range groups {
			before[k] = g.subs.Delivered.Load()
		}
		if _, err := c.PublishBatch(subject, payload, 1); err != nil {
			return n, time.Since(start), fmt.Errorf("probe: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
		all := true
		for k, g := range groups {
			if g.subs.Delivered.Load()-before[k] < int64(g.ready) {
				all = false
			}
		}
		if all {
			return n, time.Since(start), nil
		}
	}
	return 0, time.Since(start), fmt.Errorf("loadgen: no probe reached every subscriber within 10s")
}

// clusterStep publishes at rate messages/s in total for cfg.Step from
// pubs and reports the step, overall and per node; ok when it was
// sustained and its backlog drained.
func clusterStep(ctx context.Context, cfg *config, t *target, pubs []*client, subject string, rate float64,
	groups []*nodeGroup, pubNode int, sent *atomic.Int64) (map[string]any, bool) {
	before := sampleServer(t)
	roles0 := roleCPU()
	self0 := readCPU(selfPID)
	cpus0 := readCPUTimes()
	n := len(groups)
	lat0 := make([]*Snapshot, n)
	d0 := make([]int64, n)
	alive0 := make([]int64, n)
	for k, g := range groups {
		lat0[k] = g.subs.Lat.Snapshot()
		d0[k] = g.subs.Delivered.Load()
		alive0[k] = g.subs.Alive.Load()
	}
	s0 := sent.Load()
	start := time.Now()
	end := start.Add(cfg.Step)
	var wg sync.WaitGroup
	var errs atomic.Int64
	per := rate / float64(len(pubs))
	for p, pc := range pubs {
		off := time.Duration(float64(p) / rate * float64(time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			pacedPublisher(ctx, pc, subject, cfg.Payload, per, start.Add(off), end, sent, &errs)
		}()
	}
	wg.Wait()
	el := time.Since(start)
	published := sent.Load() - s0
	dStep := make([]int64, n)
	var dAll, want int64
	for k, g := range groups {
		dStep[k] = g.subs.Delivered.Load() - d0[k]
		dAll += dStep[k]
		want += published * int64(g.ready)
	}
	after := sampleServer(t)
	roles1 := roleCPU()
	selfCPU := readCPU(selfPID) - self0
	cpus := cpuBusy(cpus0, readCPUTimes())
	frac := 0.0
	if want > 0 {
		frac = float64(dAll) / float64(want)
	}
	ok := frac >= 0.95 && errs.Load() == 0
	// Drain what the step left before the next one starts.
	drained := func() bool {
		for k, g := range groups {
			if g.subs.Delivered.Load()-d0[k] < published*int64(g.ready) {
				return false
			}
		}
		return true
	}
	drainEnd := time.Now().Add(10 * time.Second)
	sum := func() int64 {
		var s int64
		for _, g := range groups {
			s += g.subs.Delivered.Load()
		}
		return s
	}
	last, lastChange := sum(), time.Now()
	for time.Now().Before(drainEnd) && !drained() && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if d := sum(); d != last {
			last, lastChange = d, time.Now()
		} else if time.Since(lastChange) > 2*time.Second {
			break
		}
	}
	isDrained := drained()
	if !isDrained {
		ok = false
	}
	var nodeRows []map[string]any
	var all *Snapshot
	for k, g := range groups {
		if g.ready == 0 {
			continue
		}
		if g.subs.Alive.Load() < alive0[k] {
			ok = false
		}
		lat := g.subs.Lat.Snapshot().Sub(lat0[k])
		all = mergeSnap(all, lat)
		w := published * int64(g.ready)
		f := 0.0
		if w > 0 {
			f = float64(dStep[k]) / float64(w)
		}
		where := "cross-node"
		if k == pubNode {
			where = "same-node"
		}
		nodeRows = append(nodeRows, map[string]any{
			"node":                k,
			"path":                where,
			"subscribers":         g.ready,
			"expected_deliveries": w,
			"delivered_in_step":   dStep[k],
			"delivered_fraction":  round(f, 4),
			"delivered_per_s":     round(float64(dStep[k])/el.Seconds(), 0),
			"latency":             lat.Summary(),
			"subs_alive":          g.subs.Alive.Load(),
		})
	}
	sd := serverDelta(before, after)
	srvCPU := sd["cpu_s"].(float64)
	perDel := func(cpu float64) float64 {
		if dAll == 0 {
			return 0
		}
		return round(cpu/float64(dAll)*1e6, 3)
	}
	roles := map[string]float64{}
	for r, c := range roles1 {
		roles[r] = round((c - roles0[r]).Seconds(), 3)
	}
	var latAll LatencySummary
	if all != nil {
		latAll = all.Summary()
	}
	st := map[string]any{
		"rate":                   rate,
		"published":              published,
		"published_per_s":        round(float64(published)/el.Seconds(), 1),
		"publish_errors":         errs.Load(),
		"expected_deliveries":    want,
		"delivered_in_step":      dAll,
		"delivered_fraction":     round(frac, 4),
		"delivered_per_s":        round(float64(dAll)/el.Seconds(), 0),
		"latency":                latAll,
		"nodes":                  nodeRows,
		"server":                 sd,
		"server_cpu_s":           srvCPU,
		"server_cpu_s_by_role":   roles,
		"loader_cpu_s":           round(selfCPU.Seconds(), 3),
		"server_us_per_delivery": perDel(srvCPU),
		"loader_us_per_delivery": perDel(selfCPU.Seconds()),
		"cpus":                   cpus,
		"drained":                isDrained,
		"sustained":              ok,
	}
	verdict := "sustained"
	if !ok {
		verdict = "NOT sustained"
	}
	for i, c := range cpus {
		verdict += fmt.Sprintf(" cpu%d %.0f%%", i, 100*c["busy"])
	}
	fmt.Printf("  step %6.0f msgs/s: sent %d (%.0f/s), %d of %d delivered in the step (%.1f%%), %.3fM deliveries/s; server CPU %.2fs %v (%.3f us/delivery), loader CPU %.2fs (%.3f us/delivery); %s\n",
		rate, published, float64(published)/el.Seconds(), dAll, want, 100*frac, float64(dAll)/el.Seconds()/1e6,
		srvCPU, roles, perDel(srvCPU), selfCPU.Seconds(), perDel(selfCPU.Seconds()), verdict)
	for _, r := range nodeRows {
		l := r["latency"].(LatencySummary)
		fmt.Printf("    node %d (%s, %d subs): %.1f%% delivered; p50 %.0fus p90 %.0fus p99 %.0fus p99.9 %.0fus max %.0fus (%d timed)\n",
			r["node"], r["path"], r["subscribers"], 100*r["delivered_fraction"].(float64), l.P50Us, l.P90Us, l.P99Us, l.P999Us, l.MaxUs, l.Count)
	}
	return st, ok
}

// roleCPU returns the CPU time of the cluster's processes by role.
func roleCPU() map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, p := range clusterProcs {
		out[p.Role] += readCPU(p.PID)
	}
	return out
}

// mergeSnap adds b's counts to a (a nil: a copy of b).
func mergeSnap(a, b *Snapshot) *Snapshot {
	if a == nil {
		c := *b
		c.counts = append([]uint64(nil), b.counts...)
		return &c
	}
	for i := range a.counts {
		a.counts[i] += b.counts[i]
	}
	a.n += b.n
	a.sum += b.sum
	a.max = max(a.max, b.max)
	return a
}
