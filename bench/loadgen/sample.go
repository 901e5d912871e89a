package main

import (
	"fmt"
	"sync"
	"time"
)

// serverSample is a reading of the server processes.
type serverSample struct {
	At      time.Time
	RSS     int64
	CPU     time.Duration
	Metrics map[string]float64
}

// sampleServer reads the target's RSS, CPU and metrics.
func sampleServer(t *target) serverSample {
	s := serverSample{At: time.Now(), RSS: sumRSS(t.PIDs), CPU: sumCPU(t.PIDs)}
	for _, u := range t.MetricsURLs {
		m, err := scrapeMetrics(u)
		if err != nil {
			continue
		}
		if s.Metrics == nil {
			s.Metrics = map[string]float64{}
		}
		for k, v := range m {
			s.Metrics[k] += v
		}
	}
	return s
}

// serverDelta summarizes the server between two samples: CPU use, RSS,
// and the ArqonBus counters that matter for load.
func serverDelta(a, b serverSample) map[string]any {
	el := b.At.Sub(a.At).Seconds()
	out := map[string]any{
		"rss_before_bytes": a.RSS,
		"rss_after_bytes":  b.RSS,
		"cpu_s":            round((b.CPU - a.CPU).Seconds(), 2),
		"cpu_util":         round((b.CPU-a.CPU).Seconds()/el, 3),
	}
	if b.Metrics != nil {
		m := map[string]any{}
		keys := []string{"arq_connections", "arq_subscriptions"}
		for _, k := range keys {
			m[k] = b.Metrics[k]
		}
		for _, k := range []string{"arq_messages_in_total", "arq_messages_out_total", "arq_slow_consumers_total",
			"arq_messages_dropped_total", "arq_error_frames_total", "arq_handshake_failures_total",
			"arq_timeouts_total", "arq_protocol_errors_total", "arq_panics_total", "arq_limit_hits_total",
			"arq_connections_accepted_total", "arq_spine_publish_errors_total", "arq_spine_dropped_total",
			"arq_socket_writes_total", "arq_write_stalls_total"} {
			m[k+"_delta"] = b.Metrics[k] - a.Metrics[k]
		}
		if w := b.Metrics["arq_socket_writes_total"] - a.Metrics["arq_socket_writes_total"]; w > 0 {
			m["frames_per_write"] = round((b.Metrics["arq_messages_out_total"]-a.Metrics["arq_messages_out_total"])/w, 2)
		}
		for _, q := range []float64{0.5, 0.99, 0.999} {
			v := promQuantile(a.Metrics, b.Metrics, "arq_route_duration_seconds", q)
			m[fmt.Sprintf("route_p%g_us", q*100)] = round(v*1e6, 2)
		}
		out["metrics"] = m
	}
	return out
}

// closeAll closes clients (with a reset when abort) from a few goroutines.
func closeAll(cs []*client, abort bool) {
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; j < len(cs); j += workers {
				if cs[j] != nil {
					cs[j].ws.Close(abort)
				}
			}
		}()
	}
	wg.Wait()
}

// connSet is a concurrency-safe list of clients.
type connSet struct {
	mu sync.Mutex
	cs []*client
}

func (s *connSet) add(c *client) {
	s.mu.Lock()
	s.cs = append(s.cs, c)
	s.mu.Unlock()
}

func (s *connSet) all() []*client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*client(nil), s.cs...)
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cs)
}

// mib formats bytes as MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
