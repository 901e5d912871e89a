package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sort"
	"time"
)

// idlePoint is one size of the idle scenario.
type idlePoint struct {
	Conns        int     `json:"conns"`
	Open         int     `json:"open"`
	ServerRSS    int64   `json:"server_rss_bytes"`
	ServerRSSEnd int64   `json:"server_rss_end_bytes"`
	LoadgenRSS   int64   `json:"loadgen_rss_bytes"`
	PerConn      float64 `json:"server_rss_per_conn_bytes"`
	Failed       int64   `json:"failed"`
	ServerConns  float64 `json:"server_reported_conns,omitempty"`
}

// runIdle holds subscribed idle connections at each of cfg.Sizes (growing
// in one process), reads the server's RSS after cfg.Settle and again after
// cfg.Duration, and fits RSS = a + b*N by least squares: b is the server's
// memory per idle connection.
func runIdle(ctx context.Context, cfg *config, t *target) (map[string]any, error) {
	sizes := append([]int(nil), cfg.Sizes...)
	sort.Ints(sizes)
	var hs handshakeStats
	var set connSet
	var subs subStats
	time.Sleep(cfg.Settle)
	base := sampleServer(t)
	points := []idlePoint{{Conns: 0, ServerRSS: base.RSS, ServerRSSEnd: base.RSS, LoadgenRSS: selfRSS()}}
	fmt.Printf("idle: baseline server RSS %s\n", mib(base.RSS))
	opened := 0
	for _, n := range sizes {
		n = min(n, cfg.MaxConns)
		if n <= opened {
			continue
		}
		ramp(ctx, t, rampOpts{
			First: opened, N: n - opened, Rate: cfg.ConnRate, Concurrency: cfg.Concurrency,
			Subject: func(i int) string { return fmt.Sprintf("bench.idle.%d", i) },
			OnReady: func(_ int, c *client) { set.add(c); go subs.run(c) },
			Label:   fmt.Sprintf("idle ramp to %d", n), Progress: cfg.Progress,
		}, &hs)
		opened = n
		if ctx.Err() != nil {
			break
		}
		runtime.GC()
		time.Sleep(cfg.Settle)
		s1 := sampleServer(t)
		hold := cfg.Duration
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		s2 := sampleServer(t)
		p := idlePoint{Conns: n, Open: int(subs.Alive.Load()), ServerRSS: s1.RSS, ServerRSSEnd: s2.RSS,
			LoadgenRSS: selfRSS(), Failed: hs.Failed.Load()}
		if p.Open > 0 {
			p.PerConn = float64(s1.RSS-base.RSS) / float64(p.Open)
		}
		if s2.Metrics != nil {
			p.ServerConns = s2.Metrics["arq_connections"]
		}
		points = append(points, p)
		fmt.Printf("idle: %6d conns (%d open, %d failed)  server RSS %s (after %v hold %s)  %.0f B/conn over baseline  loadgen RSS %s\n",
			n, p.Open, p.Failed, mib(s1.RSS), hold, mib(s2.RSS), p.PerConn, mib(p.LoadgenRSS))
	}
	closeAll(set.all(), true)
	// Least squares of RSS (after settling) on open connections.
	var xs, ys []float64
	for _, p := range points {
		xs = append(xs, float64(p.Open))
		ys = append(ys, float64(p.ServerRSS))
	}
	slope, icpt, r2 := leastSquares(xs, ys)
	fmt.Printf("idle: slope %.0f bytes/conn (intercept %s, r2 %.4f)\n", slope, mib(int64(icpt)), r2)
	return map[string]any{
		"points":               points,
		"slope_bytes_per_conn": round(slope, 1),
		"intercept_bytes":      int64(icpt),
		"r2":                   round(r2, 5),
		"handshake":            hs.summary(),
		"read_loop_end":        subs.summary()["read_loop_end"],
	}, nil
}

// leastSquares fits y = icpt + slope*x and returns r squared.
func leastSquares(xs, ys []float64) (slope, icpt, r2 float64) {
	n := float64(len(xs))
	if n < 2 {
		return 0, 0, 0
	}
	var sx, sy, sxx, sxy, syy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
		syy += ys[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0, sy / n, 0
	}
	slope = (n*sxy - sx*sy) / den
	icpt = (sy - slope*sx) / n
	vy := n*syy - sy*sy
	if vy > 0 {
		r := (n*sxy - sx*sy) / (math.Sqrt(den) * math.Sqrt(vy))
		r2 = r * r
	}
	return slope, icpt, r2
}
