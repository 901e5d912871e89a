//go:build linux

package main

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/arqonbus/arqonbus/auth"
	arqclient "github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/pb"
)

// The presence scenario (-scenario presence) has five modes
// (-presence-mode):
//
//	storm       -conns clients join -rooms-per-conn of -rooms presence
//	            rooms, hold for -hold (jittered 0.5-1.5x), drop the
//	            connection (shutdown: the server sees EOF) and reconnect and
//	            rejoin at once, for -duration after a -settle warm-up. The
//	            rate is what the brain applied: arq_brain_joins_total +
//	            arq_brain_leaves_total over the window (and what the gateway
//	            sent: arq_presence_local_*). Lean epoll client.
//	connect     -rounds rounds of -conns handshakes paced at -conn-rate:
//	            connect + WELCOME + SUB + ACK, plain and with presence in
//	            turn, same client code (a goroutine per handshake).
//	idle        ramp to each of -sizes connections, each a presence member
//	            of one of -rooms rooms; server RSS after -settle; slope.
//	idle-plain  the same with plain subscriptions (run it against a fresh
//	            server: RSS does not shrink).
//	kill        the spawned server (node A, brain in process) must listen
//	            for other nodes ([nats] embedded_listen in -arq-config); a
//	            node B (arq serve --nats, [brain] enabled = false) is
//	            started, -kill-members members join a room on it, an
//	            observer on A sees them, B is SIGKILLed, and the time until
//	            the observer has every leave (node_down) is measured;
//	            -rounds times.
//
// Its flags are registered here (not in main.go) to keep main.go's edits
// to the scenario list.
var presenceOpts struct {
	mode         string
	rooms        int
	roomsPerConn int
	rounds       int
	killMembers  int
	pprofFile    string
}

func init() {
	flag.StringVar(&presenceOpts.mode, "presence-mode", "storm", "presence: storm | connect | idle | idle-plain | kill")
	flag.IntVar(&presenceOpts.rooms, "rooms", 100, "presence: rooms")
	flag.IntVar(&presenceOpts.roomsPerConn, "rooms-per-conn", 1, "presence storm: rooms each connection joins")
	flag.IntVar(&presenceOpts.rounds, "rounds", 3, "presence connect/kill: rounds")
	flag.IntVar(&presenceOpts.killMembers, "kill-members", 100, "presence kill: members on the killed node")
	flag.StringVar(&presenceOpts.pprofFile, "presence-pprof", "", "presence storm: write a 10s CPU profile of the server (its admin /debug/pprof/profile) taken during the window to this file")
}

func runPresence(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	if t.Kind != kindArqon {
		return nil, errors.New("presence: ArqonBus only")
	}
	var res map[string]any
	var err error
	switch presenceOpts.mode {
	case "storm":
		res, err = presenceStorm(ctx, cfg, t)
	case "connect":
		res, err = presenceConnect(ctx, cfg, t)
	case "idle":
		res, err = presenceIdle(ctx, cfg, t, true)
	case "idle-plain":
		res, err = presenceIdle(ctx, cfg, t, false)
	case "kill":
		res, err = presenceKill(ctx, cfg, t)
	default:
		return nil, fmt.Errorf("presence: unknown -presence-mode %q", presenceOpts.mode)
	}
	if res != nil {
		res["mode"] = presenceOpts.mode
		res["rooms"] = presenceOpts.rooms
		res["rooms_per_conn"] = presenceOpts.roomsPerConn
	}
	return res, err
}

// presenceRoom is room j of connection i.
func presenceRoom(i, j int) string {
	return "presence.room." + strconv.Itoa((i*presenceOpts.roomsPerConn+j)%max(presenceOpts.rooms, 1))
}

// subFrameBytes returns the opcode and payload of a SUB (id) of subject,
// with presence or plain.
func subFrameBytes(proto bool, id uint64, subject string, presence bool) (byte, []byte) {
	f := pb.ClientFrame{Op: pb.Op_OP_SUB, Id: id, Subject: subject, Presence: presence}
	if proto {
		b, _ := f.MarshalVT()
		return 2, b
	}
	return 1, pb.AppendClientJSON(nil, &f)
}

// presenceCounters are the counters the storm reads.
var presenceCounters = []string{
	"arq_brain_joins_total", "arq_brain_leaves_total",
	"arq_presence_local_joins_total", "arq_presence_local_leaves_total",
	"arq_presence_events_delivered_total", "arq_presence_batches_sent_total",
	"arq_brain_batches_total", "arq_brain_sync_requests_total", "arq_brain_errors_total",
	"arq_presence_errors_total", "arq_slow_consumers_total", "arq_connections_accepted_total",
	"arq_spine_dropped_total", "arq_accept_out_of_fds_total",
}

// brainOps is joins + leaves applied by the brain(s) in s.
func brainOps(s serverSample) float64 {
	return s.Metrics["arq_brain_joins_total"] + s.Metrics["arq_brain_leaves_total"]
}

// localOps is joins + leaves the gateway(s) sent.
func localOps(s serverSample) float64 {
	return s.Metrics["arq_presence_local_joins_total"] + s.Metrics["arq_presence_local_leaves_total"]
}

// dropItem is a connection due to be dropped.
type dropItem struct {
	at int64
	c  *rconn
}

type dropHeap []dropItem

func (h dropHeap) Len() int           { return len(h) }
func (h dropHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dropHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dropHeap) Push(x any)        { *h = append(*h, x.(dropItem)) }
func (h *dropHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// presenceStorm: see the mode list above.
func presenceStorm(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	n := min(cfg.Conns, cfg.MaxConns)
	k := max(presenceOpts.roomsPerConn, 1)
	var hs handshakeStats
	e, err := newEngine(t, engineOpts{Loops: cfg.Loops, RBuf: cfg.RBuf, HS: &hs})
	if err != nil {
		return nil, err
	}
	defer e.close()
	if len(t.MetricsURLs) == 0 {
		return nil, errors.New("presence storm: needs the server's /metrics (-metrics with -url)")
	}
	hold := cfg.Hold
	conc := max(cfg.Concurrency, 1)
	var (
		drops           dropHeap
		dialed, dropped int64
		lost            int64 // dropped by the server before their time
		joinWriteFail   int64
		fresh           []*rconn
		wbuf            []byte
		mask            = rand.Uint32()
	)
	// Prebuilt payloads: the K subs of each of the -rooms residues.
	type payload struct {
		op byte
		p  []byte
	}
	subs := make([][]payload, max(presenceOpts.rooms, 1))
	for r := range subs {
		for j := 0; j < k; j++ {
			op, p := subFrameBytes(t.Proto, uint64(j+1), presenceRoom(r, j), true)
			subs[r] = append(subs[r], payload{op, p})
		}
	}
	join := func(c *rconn) bool {
		if e.table[c.fd].Load() != c {
			return false
		}
		wbuf = wbuf[:0]
		for _, s := range subs[c.i%len(subs)] {
			mask = mask*1664525 + 1013904223
			wbuf = appendMaskedFrame(wbuf, s.op, s.p, mask)
		}
		nw, err := unix.Write(c.fd, wbuf)
		return err == nil && nw == len(wbuf)
	}
	holdFor := func() int64 { return int64(float64(hold) * (0.5 + rand.Float64())) }

	start := time.Now()
	rampDeadline := start.Add(60 * time.Second)
	var rampDone, winStart, winEnd time.Time
	var before, after serverSample
	var selfCPU0 time.Duration
	var hsBefore int64
	var progressAt time.Time
	var lastProg serverSample
	var profErr error
	var profWG sync.WaitGroup
	stopped := false
	for ctx.Err() == nil {
		now := time.Now()
		nowNs := now.UnixNano()
		// Joins for the connections that just finished their handshake.
		e.mu.Lock()
		fresh = append(fresh[:0], e.conns...)
		e.conns = e.conns[:0]
		e.mu.Unlock()
		for _, c := range fresh {
			if !join(c) {
				joinWriteFail++
				continue
			}
			heap.Push(&drops, dropItem{at: nowNs + holdFor(), c: c})
		}
		clear(fresh)
		if !stopped {
			// Drops due.
			for drops.Len() > 0 && drops[0].at <= nowNs {
				it := heap.Pop(&drops).(dropItem)
				if e.table[it.c.fd].Load() == it.c {
					_ = unix.Shutdown(it.c.fd, unix.SHUT_RDWR)
				} else {
					lost++
				}
				dropped++
			}
			// Dials: keep n connections alive or in flight.
			failed := hs.Failed.Load()
			for dialed < int64(n)+dropped+joinWriteFail+failed && dialed-e.ready.Load()-failed < int64(conc) {
				e.dial(int(dialed), "")
				dialed++
				failed = hs.Failed.Load()
			}
		}
		switch {
		case rampDone.IsZero() && e.ready.Load() >= int64(n):
			rampDone = now
			fmt.Printf("presence storm: %d connections up in %.2fs (%d failed); warming up %v\n", n,
				now.Sub(start).Seconds(), hs.Failed.Load(), cfg.Settle)
		case rampDone.IsZero() && now.After(rampDeadline):
			return nil, fmt.Errorf("presence storm: only %d of %d connections up after 60s (failed %d %v)",
				e.ready.Load(), n, hs.Failed.Load(), hs.errors())
		case !rampDone.IsZero() && winStart.IsZero() && now.Sub(rampDone) >= cfg.Settle:
			before = sampleServer(t)
			lastProg, progressAt = before, now
			winStart = time.Now()
			selfCPU0 = readCPU(selfPID)
			hsBefore = hs.OK.Load()
			if presenceOpts.pprofFile != "" {
				profWG.Add(1)
				go func() {
					defer profWG.Done()
					profErr = fetchProfile(t.MetricsURLs[0], presenceOpts.pprofFile, min(10*time.Second, cfg.Duration))
				}()
			}
		case !winStart.IsZero() && !stopped && now.Sub(winStart) >= cfg.Duration:
			after = sampleServer(t)
			winEnd = time.Now()
			stopped = true
		}
		if stopped {
			break
		}
		if !winStart.IsZero() && cfg.Progress > 0 && now.Sub(progressAt) >= cfg.Progress {
			s := sampleServer(t)
			el := s.At.Sub(lastProg.At).Seconds()
			fmt.Printf("  storm %5.1fs: brain %.0f ops/s, gateway %.0f ops/s, %.0f handshakes/s, backlog %.0f, server CPU %.0f%%\n",
				s.At.Sub(winStart).Seconds(), (brainOps(s)-brainOps(lastProg))/el, (localOps(s)-localOps(lastProg))/el,
				float64(hs.OK.Load()-hsBefore)/s.At.Sub(winStart).Seconds(), localOps(s)-brainOps(s),
				100*(s.CPU-lastProg.CPU).Seconds()/el)
			lastProg, progressAt = s, s.At
		}
		time.Sleep(time.Millisecond)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	selfCPU := readCPU(selfPID) - selfCPU0
	hsWin := hs.OK.Load() - hsBefore
	// Let the brain finish what the gateway sent.
	drainStart := time.Now()
	drained := after
	for time.Since(drainStart) < 20*time.Second {
		drained = sampleServer(t)
		if brainOps(drained) >= localOps(drained) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	drain := drained.At.Sub(winEnd)
	profWG.Wait()

	win := winEnd.Sub(winStart).Seconds()
	d := func(name string) float64 { return after.Metrics[name] - before.Metrics[name] }
	counters := map[string]any{}
	for _, c := range presenceCounters {
		counters[c+"_delta"] = d(c)
	}
	bops := brainOps(after) - brainOps(before)
	lops := localOps(after) - localOps(before)
	res := map[string]any{
		"conns":                       n,
		"hold_ns":                     hold,
		"window_s":                    round(win, 2),
		"brain_joins_leaves_per_s":    round(bops/win, 1),
		"brain_joins_per_s":           round(d("arq_brain_joins_total")/win, 1),
		"brain_leaves_per_s":          round(d("arq_brain_leaves_total")/win, 1),
		"gateway_joins_leaves_per_s":  round(lops/win, 1),
		"events_delivered_per_s":      round(d("arq_presence_events_delivered_total")/win, 1),
		"handshakes_per_s":            round(float64(hsWin)/win, 1),
		"backlog_at_window_start":     localOps(before) - brainOps(before),
		"backlog_at_window_end":       localOps(after) - brainOps(after),
		"drain_s":                     round(drain.Seconds(), 2),
		"drained":                     brainOps(drained) >= localOps(drained),
		"store_p50_ms":                round(1e3*promQuantile(before.Metrics, after.Metrics, "arq_brain_store_duration_seconds", 0.5), 3),
		"store_p99_ms":                round(1e3*promQuantile(before.Metrics, after.Metrics, "arq_brain_store_duration_seconds", 0.99), 3),
		"server":                      serverDelta(before, after),
		"counters":                    counters,
		"handshake":                   hs.summary(),
		"dropped_by_server_before_us": lost,
		"join_write_failures":         joinWriteFail,
		"loadgen_cpu_s":               round(selfCPU.Seconds(), 2),
		"loadgen_rss":                 selfRSS(),
	}
	if presenceOpts.pprofFile != "" {
		res["pprof"] = presenceOpts.pprofFile
		if profErr != nil {
			res["pprof_error"] = profErr.Error()
		}
	}
	fmt.Printf("presence storm: %d conns x %d rooms of %d, hold %v, %.1fs window\n", n, k, presenceOpts.rooms, hold, win)
	fmt.Printf("  brain applied %.0f joins+leaves/s (joins %.0f/s, leaves %.0f/s); gateway sent %.0f/s; %.0f handshakes/s\n",
		bops/win, d("arq_brain_joins_total")/win, d("arq_brain_leaves_total")/win, lops/win, float64(hsWin)/win)
	fmt.Printf("  backlog (sent - applied) %.0f at start, %.0f at end; drained %v in %.2fs after the window\n",
		localOps(before)-brainOps(before), localOps(after)-brainOps(after), res["drained"], drain.Seconds())
	fmt.Printf("  events delivered %.0f/s; store call p50 %.3f ms p99 %.3f ms; syncs %.0f, brain errors %.0f, slow consumers %.0f, accepts out of descriptors %.0f\n",
		d("arq_presence_events_delivered_total")/win, res["store_p50_ms"], res["store_p99_ms"],
		d("arq_brain_sync_requests_total"), d("arq_brain_errors_total"), d("arq_slow_consumers_total"),
		d("arq_accept_out_of_fds_total"))
	fmt.Printf("  server CPU %.2fs in %.1fs (%.0f%%), loadgen CPU %.2fs; server RSS %s -> %s; handshake failures %d %v\n",
		(after.CPU - before.CPU).Seconds(), win, 100*(after.CPU-before.CPU).Seconds()/win, selfCPU.Seconds(),
		mib(before.RSS), mib(after.RSS), hs.Failed.Load(), hs.errors())
	return res, nil
}

// fetchProfile saves the CPU profile of the server whose /metrics is
// metricsURL.
func fetchProfile(metricsURL, file string, d time.Duration) error {
	u, err := url.Parse(metricsURL)
	if err != nil {
		return err
	}
	u.Path = "/debug/pprof/profile"
	u.RawQuery = "seconds=" + strconv.Itoa(int(d.Seconds()))
	return httpGetToFile(u.String(), file, d+10*time.Second)
}

// httpGetToFile saves the body of a GET of u (200 only) to file.
func httpGetToFile(u, file string, timeout time.Duration) error {
	cl := http.Client{Timeout: timeout}
	resp, err := cl.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// presenceSubscribe sends a SUB (id 1) of subject, with presence or plain,
// and waits for its ACK.
func presenceSubscribe(c *client, subject string, presence bool) error {
	_ = c.ws.c.SetReadDeadline(time.Now().Add(c.t.Timeout))
	defer c.ws.c.SetReadDeadline(time.Time{})
	op, p := subFrameBytes(c.t.Proto, 1, subject, presence)
	if err := c.ws.writeFrame(ws.OpCode(op), p); err != nil {
		return err
	}
	for {
		_, m, err := c.ws.readMessage()
		if err != nil {
			return err
		}
		if c.t.Proto {
			var sf pb.ServerFrame
			if err := sf.UnmarshalVT(m); err != nil {
				return err
			}
			switch {
			case sf.Op == pb.Op_OP_ACK && sf.Id == 1:
				return nil
			case sf.Op == pb.Op_OP_ERROR:
				return fmt.Errorf("%w: %v", errServer, sf.Error)
			}
			continue
		}
		switch {
		case bytes.HasPrefix(m, []byte(`{"op":"ack","id":1}`)):
			return nil
		case bytes.HasPrefix(m, []byte(`{"op":"error"`)):
			return fmt.Errorf("%w: %s", errServer, m)
		}
	}
}

// presenceRamp opens connections first..first+n-1 at rate per second
// (conc in flight), each subscribed to its room with presence or plain,
// and returns them with the ramp's duration.
func presenceRamp(ctx context.Context, t *target, first, n int, rate float64, conc int, presence bool, hs *handshakeStats) ([]*client, time.Duration) {
	out := make([]*client, n)
	sem := make(chan struct{}, max(conc, 1))
	var wg sync.WaitGroup
	start := time.Now()
	for k := 0; k < n && ctx.Err() == nil; k++ {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(k) / rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			defer func() { <-sem }()
			i := first + k
			t0 := time.Now()
			c, ht, err := t.connect(ctx, i)
			if err != nil {
				hs.fail(err)
				return
			}
			if err := presenceSubscribe(c, presenceRoom(i, 0), presence); err != nil {
				c.ws.Close(true)
				hs.fail(err)
				return
			}
			hs.Upgrade.Record(ht.Upgrade)
			hs.Welcome.Record(ht.Welcome)
			hs.SubAck.Record(time.Since(t0))
			hs.OK.Add(1)
			out[k] = c
		}(k)
	}
	wg.Wait()
	return out, time.Since(start)
}

// presenceConnect: plain and presence handshakes in turn, -rounds times.
func presenceConnect(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	n := min(cfg.Conns, cfg.MaxConns)
	kinds := map[string][]map[string]any{}
	next := 0
	for r := 0; r < max(presenceOpts.rounds, 1) && ctx.Err() == nil; r++ {
		for _, presence := range []bool{false, true} {
			name := "plain"
			if presence {
				name = "presence"
			}
			var hs handshakeStats
			b := sampleServer(t)
			conns, el := presenceRamp(ctx, t, next, n, cfg.ConnRate, cfg.Concurrency, presence, &hs)
			a := sampleServer(t)
			next += n
			closeAll(conns, true)
			s := hs.SubAck.Summary()
			row := map[string]any{
				"round": r + 1, "ok": hs.OK.Load(), "failed": hs.Failed.Load(), "errors": hs.errors(),
				"ramp_s": round(el.Seconds(), 3), "handshakes_per_s": round(float64(hs.OK.Load())/el.Seconds(), 1),
				"handshake": hs.summary(), "server_cpu_s": round((a.CPU - b.CPU).Seconds(), 3),
				"server_cpu_us_per_handshake": round(1e6*(a.CPU-b.CPU).Seconds()/float64(max(hs.OK.Load(), 1)), 1),
			}
			kinds[name] = append(kinds[name], row)
			fmt.Printf("presence connect round %d %-8s: %d ok %d failed in %.2fs = %.0f/s; sub ACK p50 %.0fus p99 %.0fus; server CPU %.0f us/handshake\n",
				r+1, name, hs.OK.Load(), hs.Failed.Load(), el.Seconds(), float64(hs.OK.Load())/el.Seconds(), s.P50Us, s.P99Us,
				row["server_cpu_us_per_handshake"])
			time.Sleep(time.Second) // let the leaves settle
		}
	}
	res := map[string]any{"conns": n, "conn_rate": cfg.ConnRate}
	for name, rows := range kinds {
		var p50s, p99s, rates, cpus []float64
		for _, row := range rows {
			h := row["handshake"].(map[string]any)
			if sa, ok := h["subscribed"].(LatencySummary); ok {
				p50s = append(p50s, sa.P50Us)
				p99s = append(p99s, sa.P99Us)
			}
			rates = append(rates, row["handshakes_per_s"].(float64))
			cpus = append(cpus, row["server_cpu_us_per_handshake"].(float64))
		}
		res[name] = map[string]any{"rounds": rows, "median_sub_ack_p50_us": median(p50s), "median_sub_ack_p99_us": median(p99s),
			"median_handshakes_per_s": median(rates), "median_server_cpu_us_per_handshake": median(cpus)}
		fmt.Printf("presence connect %-8s medians: sub ACK p50 %.0fus p99 %.0fus, %.0f/s, server CPU %.0f us/handshake\n",
			name, median(p50s), median(p99s), median(rates), median(cpus))
	}
	return res, nil
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// presenceIdle ramps to each of -sizes connections (members or plain
// subscribers of -rooms rooms) and reads the server's RSS.
func presenceIdle(ctx context.Context, cfg *config, t *target, presence bool) (map[string]any, error) {
	var all []*client
	defer func() { closeAll(all, true) }()
	var xs, ys []float64
	var points []map[string]any
	var hs handshakeStats
	base := sampleServer(t)
	for _, size := range cfg.Sizes {
		size = min(size, cfg.MaxConns)
		if size <= len(all) {
			continue
		}
		cs, _ := presenceRamp(ctx, t, len(all), size-len(all), cfg.ConnRate, cfg.Concurrency, presence, &hs)
		for _, c := range cs {
			if c != nil {
				all = append(all, c)
			}
		}
		time.Sleep(cfg.Settle)
		s := sampleServer(t)
		xs = append(xs, float64(len(all)))
		ys = append(ys, float64(s.RSS))
		points = append(points, map[string]any{"conns": len(all), "rss_bytes": s.RSS,
			"presence_members": s.Metrics["arq_presence_local_members"], "connections": s.Metrics["arq_connections"]})
		fmt.Printf("presence idle (presence=%v): %d connections, RSS %s, members %.0f\n", presence, len(all), mib(s.RSS),
			s.Metrics["arq_presence_local_members"])
	}
	slope, icpt, r2 := leastSquares(xs, ys)
	fmt.Printf("presence idle (presence=%v): slope %.0f bytes/conn (intercept %s, r2 %.4f), base RSS %s, failures %d %v\n",
		presence, slope, mib(int64(icpt)), r2, mib(base.RSS), hs.Failed.Load(), hs.errors())
	return map[string]any{"presence": presence, "points": points, "slope_bytes_per_conn": round(slope, 1),
		"intercept_bytes": round(icpt, 0), "r2": round(r2, 4), "base_rss_bytes": base.RSS,
		"failed": hs.Failed.Load(), "errors": hs.errors()}, nil
}

// presenceKill: see the mode list above.
func presenceKill(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	bin := flag.Lookup("arq-bin").Value.String()
	cfgFile := flag.Lookup("arq-config").Value.String()
	var ac struct {
		NATS struct {
			EmbeddedListen string `toml:"embedded_listen"`
		} `toml:"nats"`
	}
	if cfgFile == "" {
		return nil, errors.New("presence kill: -arq-config must set [nats] embedded_listen")
	}
	if _, err := toml.DecodeFile(cfgFile, &ac); err != nil || ac.NATS.EmbeddedListen == "" {
		return nil, fmt.Errorf("presence kill: -arq-config must set [nats] embedded_listen (%v)", err)
	}
	natsURL := "nats://" + ac.NATS.EmbeddedListen
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "loadgen-kill-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	nodeCfg := filepath.Join(dir, "node.toml")
	if err := os.WriteFile(nodeCfg, []byte("[brain]\nenabled = false\n"), 0o644); err != nil {
		return nil, err
	}
	tenant := flag.Lookup("tenant").Value.String()

	// The observer: a member of the room on node A.
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	obs, err := arqclient.Dial(octx, arqclient.Options{URL: t.URLs[0], Codec: arqclient.JSON})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("presence kill: observer: %w", err)
	}
	defer obs.Close()
	const room = "presence.kill"
	octx, cancel = context.WithTimeout(ctx, 10*time.Second)
	sub, err := obs.SubscribePresence(octx, room, nil)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("presence kill: observer join: %w", err)
	}
	var rows []map[string]any
	var lasts []float64
	for r := 0; r < max(presenceOpts.rounds, 1) && ctx.Err() == nil; r++ {
		row, err := killRound(ctx, t, bin, dir, nodeCfg, natsURL, tenant, sub, room, presenceOpts.killMembers, r)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
		lasts = append(lasts, row["last_leave_s"].(float64))
	}
	fmt.Printf("presence kill: median time from SIGKILL to the last leave %.3fs over %d rounds\n", median(lasts), len(lasts))
	return map[string]any{"rounds": rows, "median_last_leave_s": round(median(lasts), 3), "members": presenceOpts.killMembers}, nil
}

// killRound starts node B, joins members to room on it, waits until the
// observer has seen them, SIGKILLs B and times the leaves.
func killRound(ctx context.Context, t *target, bin, dir, nodeCfg, natsURL, tenant string, sub *arqclient.Subscription, room string, members, r int) (map[string]any, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	aport, err := freePort()
	if err != nil {
		return nil, err
	}
	addr, admin := "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(aport)
	node := "node-b-" + strconv.Itoa(r)
	p, err := startProc(dir, node, bin, "serve", "--nats", natsURL, "--node-id", node, "--config", nodeCfg,
		"--listen", addr, "--admin", admin)
	if err != nil {
		return nil, err
	}
	killed := false
	defer func() {
		if !killed {
			p.stop()
		}
	}()
	if err := waitHTTP("http://"+admin+"/readyz", 30*time.Second); err != nil {
		return nil, err
	}
	secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		return nil, err
	}
	tok, err := auth.Mint(secret, auth.MintOptions{Tenant: tenant, User: "loadgen-b", TTL: time.Hour})
	if err != nil {
		return nil, err
	}
	bt := &target{Kind: kindArqon, Proto: t.Proto, SrcIPs: t.SrcIPs, Timeout: t.Timeout,
		URLs: []string{"ws://" + addr + "/v1/socket?token=" + url.QueryEscape(tok)}}
	var mu sync.Mutex
	var conns []*client
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < members; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, _, err := bt.connect(ctx, i)
			if err == nil {
				if err = presenceSubscribe(c, room, true); err != nil {
					c.ws.Close(true)
				}
			}
			if err != nil {
				failed.Add(1)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	defer closeAll(conns, true)
	if failed.Load() > 0 {
		return nil, fmt.Errorf("presence kill: %d of %d members failed to join on %s", failed.Load(), members, node)
	}
	// The observer sees every join from B.
	joined := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(joined) < members {
		select {
		case ev := <-sub.Presence:
			if ev.Type == arqclient.PresenceUpdate && ev.Member.Node == node {
				joined[ev.Member.Session] = true
			}
		case <-deadline:
			return nil, fmt.Errorf("presence kill: observer saw %d of %d joins from %s", len(joined), members, node)
		}
	}
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Millisecond) // a random phase of B's heartbeat
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return nil, err
	}
	kill := time.Now()
	killed = true
	_ = p.cmd.Wait()
	p.log.Close()
	var first, last time.Duration
	left := 0
	deadline = time.After(30 * time.Second)
	for left < members {
		select {
		case ev := <-sub.Presence:
			if ev.Type != arqclient.PresenceLeave || ev.Member.Node != node {
				continue
			}
			if ev.Reason != "node_down" {
				return nil, fmt.Errorf("presence kill: leave reason %q", ev.Reason)
			}
			left++
			last = time.Since(kill)
			if left == 1 {
				first = last
			}
		case <-deadline:
			return nil, fmt.Errorf("presence kill: %d of %d leaves within 30s", left, members)
		}
	}
	fmt.Printf("presence kill round %d: %d members of %s left %.3fs (first) - %.3fs (last) after SIGKILL\n",
		r+1, members, node, first.Seconds(), last.Seconds())
	return map[string]any{"round": r + 1, "node": node, "members": members,
		"first_leave_s": round(first.Seconds(), 3), "last_leave_s": round(last.Seconds(), 3)}, nil
}
