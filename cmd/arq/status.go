package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// errNotReady makes arq status exit 1: the node answered but is not ready.
var errNotReady = errors.New("node not ready")

// nodeStatus is what arq status reports, read from a node's admin listener
// (/readyz and /metrics).
type nodeStatus struct {
	Admin          string             `json:"admin"`
	Ready          bool               `json:"ready"`
	ReadyText      string             `json:"ready_text"`
	NodeID         string             `json:"node_id,omitempty"`
	Version        string             `json:"version,omitempty"`
	Connections    float64            `json:"connections"`
	Accepted       float64            `json:"connections_accepted"`
	Subscriptions  float64            `json:"subscriptions"`
	MessagesIn     float64            `json:"messages_in"`
	MessagesOut    float64            `json:"messages_out"`
	Dropped        float64            `json:"messages_dropped"`
	SlowConsumers  float64            `json:"slow_consumers"`
	Timeouts       map[string]float64 `json:"timeouts"`
	Limits         map[string]float64 `json:"limit_hits"`
	HandshakeFails map[string]float64 `json:"handshake_failures"`
	SpineConnected bool               `json:"spine_connected"`
	SpinePublished float64            `json:"spine_published"`
	SpineUnheard   float64            `json:"spine_unheard"`
	SpineReceived  float64            `json:"spine_received"`
	RSSBytes       float64            `json:"rss_bytes"`
	OpenFDs        float64            `json:"open_fds"`
	MaxFDs         float64            `json:"max_fds"`
	UptimeSeconds  float64            `json:"uptime_seconds"`
}

// runStatus implements arq status: a summary of a running node, from its
// admin listener. Exit status: 0 ready, 1 not ready, 2 unreachable.
func runStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	admin := fs.String("admin", "", "the node's admin address (default: server.admin from --config, else 127.0.0.1:9090)")
	cfgPath := fs.String("config", "", "TOML config file to take server.admin from")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "time allowed for the node to answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr := *admin
	if addr == "" {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		addr = cfg.Server.Admin
		if addr == "" {
			addr = "127.0.0.1:9090"
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := fetchStatus(ctx, addr)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else {
		printStatus(os.Stdout, st)
	}
	if !st.Ready {
		return &exitError{code: 1, err: errNotReady}
	}
	return nil
}

// exitError carries the exit status a command wants.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// fetchStatus reads /readyz and /metrics from the admin listener at addr.
func fetchStatus(ctx context.Context, addr string) (*nodeStatus, error) {
	base := "http://" + addr
	st := &nodeStatus{Admin: addr}
	code, body, err := httpGet(ctx, base+"/readyz")
	if err != nil {
		return nil, fmt.Errorf("arq status: %s: %w", addr, err)
	}
	st.Ready, st.ReadyText = code == http.StatusOK, strings.TrimSpace(body)
	code, body, err = httpGet(ctx, base+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("arq status: %s: %w", addr, err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("arq status: %s/metrics: HTTP %d", base, code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("arq status: %s/metrics: %w", base, err)
	}
	one := func(name string) float64 {
		f := fams[name]
		if f == nil {
			return 0
		}
		sum := 0.0
		for _, m := range f.GetMetric() {
			sum += metricValue(m)
		}
		return sum
	}
	byLabel := func(name, label string) map[string]float64 {
		out := map[string]float64{}
		if f := fams[name]; f != nil {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label {
						out[l.GetValue()] += metricValue(m)
					}
				}
			}
		}
		return out
	}
	if f := fams["arq_node_info"]; f != nil && len(f.GetMetric()) > 0 {
		for _, l := range f.GetMetric()[0].GetLabel() {
			switch l.GetName() {
			case "node_id":
				st.NodeID = l.GetValue()
			case "version":
				st.Version = l.GetValue()
			}
		}
	}
	st.Connections = one("arq_connections")
	st.Accepted = one("arq_connections_accepted_total")
	st.Subscriptions = one("arq_subscriptions")
	st.MessagesIn = one("arq_messages_in_total")
	st.MessagesOut = one("arq_messages_out_total")
	st.Dropped = one("arq_messages_dropped_total")
	st.SlowConsumers = one("arq_slow_consumers_total")
	st.Timeouts = byLabel("arq_timeouts_total", "kind")
	st.Limits = byLabel("arq_limit_hits_total", "limit")
	st.HandshakeFails = byLabel("arq_handshake_failures_total", "reason")
	st.SpineConnected = one("arq_spine_connected") == 1
	st.SpinePublished = one("arq_spine_published_total")
	st.SpineUnheard = one("arq_spine_unheard_total")
	st.SpineReceived = one("arq_spine_received_total")
	st.RSSBytes = one("process_resident_memory_bytes")
	st.OpenFDs = one("process_open_fds")
	st.MaxFDs = one("process_max_fds")
	if start := one("process_start_time_seconds"); start > 0 {
		st.UptimeSeconds = float64(time.Now().Unix()) - start
	}
	return st, nil
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, string(b), err
}

// printStatus writes the human-readable summary.
func printStatus(w io.Writer, st *nodeStatus) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY (" + st.ReadyText + ")"
	}
	id := st.NodeID
	if id == "" {
		id = "?"
	}
	fmt.Fprintf(w, "arq node %s at %s: %s\n", id, st.Admin, ready)
	if st.Version != "" {
		fmt.Fprintf(w, "  version        %s, up %s\n", st.Version, (time.Duration(st.UptimeSeconds) * time.Second).String())
	}
	fmt.Fprintf(w, "  connections    %.0f open, %.0f accepted\n", st.Connections, st.Accepted)
	fmt.Fprintf(w, "  subscriptions  %.0f\n", st.Subscriptions)
	fmt.Fprintf(w, "  messages       in %.0f, out %.0f, dropped %.0f\n", st.MessagesIn, st.MessagesOut, st.Dropped)
	spine := "disconnected"
	if st.SpineConnected {
		spine = "connected"
	}
	fmt.Fprintf(w, "  spine (NATS)   %s; published %.0f, unheard %.0f, received %.0f\n", spine, st.SpinePublished, st.SpineUnheard, st.SpineReceived)
	fmt.Fprintf(w, "  slow consumers %.0f\n", st.SlowConsumers)
	fmt.Fprintf(w, "  timeouts       %s\n", labels(st.Timeouts))
	fmt.Fprintf(w, "  limit hits     %s\n", labels(st.Limits))
	fmt.Fprintf(w, "  upgrades refused %s\n", labels(st.HandshakeFails))
	fmt.Fprintf(w, "  process        rss %.1f MiB, open files %.0f of %.0f\n", st.RSSBytes/(1<<20), st.OpenFDs, st.MaxFDs)
}

// labels formats a label -> count map as "a 1, b 2", or "none".
func labels(m map[string]float64) string {
	var keys []string
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "none"
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.0f", k, m[k])
	}
	return strings.Join(parts, ", ")
}
