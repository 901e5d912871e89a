package main

import (
	"crypto/subtle"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/web"
)

// The admin page on the admin listener: read-only. GET / is the page
// (web/admin, embedded), /admin/<file> its assets, /admin/api/status the
// JSON it polls. With server.admin_token set, the JSON needs
// "Authorization: Bearer <token>" (or ?token=); the page asks for it.

// maxAdminTenants caps the tenant list of /admin/api/status.
const maxAdminTenants = 50

type adminPageConfig struct {
	gw      *gateway.Gateway
	reg     *prometheus.Registry
	ready   func() (bool, string)
	brain   string // "in process, memory", "elsewhere (...)"
	token   string // server.admin_token; "" = none
	started time.Time
}

// adminStatus is the JSON of /admin/api/status. Counters are totals since
// start; the page turns them into rates.
type adminStatus struct {
	Node        string             `json:"node"`
	Version     string             `json:"version"`
	Time        int64              `json:"time_ms"`
	UptimeS     float64            `json:"uptime_s"`
	Ready       bool               `json:"ready"`
	NotReady    string             `json:"not_ready,omitempty"`
	Info        gateway.NodeInfo   `json:"info"`
	Spine       map[string]float64 `json:"spine"`
	Brain       string             `json:"brain"`
	BrainState  map[string]float64 `json:"brain_state"`
	Counters    map[string]float64 `json:"counters"`
	LimitHits   map[string]float64 `json:"limit_hits"`
	Handshake   map[string]float64 `json:"handshake_failures"`
	ErrorFrames map[string]float64 `json:"error_frames"`
}

func addAdminPage(mux *http.ServeMux, c adminPageConfig) {
	files := web.Admin()
	static := func(w http.ResponseWriter, r *http.Request, name string) {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		ct := map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}[path.Ext(name)]
		if ct == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Write(b)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { static(w, r, "index.html") })
	mux.HandleFunc("GET /admin/{file}", func(w http.ResponseWriter, r *http.Request) { static(w, r, r.PathValue("file")) })
	mux.HandleFunc("GET /admin/api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if c.token != "" && !adminAuthorized(r, c.token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="arqonbus-admin"`)
			http.Error(w, "admin token required", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(c.status())
	})
}

func adminAuthorized(r *http.Request, token string) bool {
	got := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		got = strings.TrimSpace(h[7:])
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func (c adminPageConfig) status() adminStatus {
	ready, why := c.ready()
	now := time.Now()
	s := adminStatus{
		Node: c.gw.NodeID(), Version: version, Time: now.UnixMilli(), UptimeS: now.Sub(c.started).Seconds(),
		Ready: ready, NotReady: why, Info: c.gw.Info(maxAdminTenants), Brain: c.brain,
		Spine: map[string]float64{}, BrainState: map[string]float64{}, Counters: map[string]float64{},
		LimitHits: map[string]float64{}, Handshake: map[string]float64{}, ErrorFrames: map[string]float64{},
	}
	mfs, _ := c.reg.Gather()
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			v := metricValue(m)
			switch {
			case name == "arq_limit_hits_total":
				s.LimitHits[label(m, "limit")] += v
			case name == "arq_handshake_failures_total":
				s.Handshake[label(m, "reason")] += v
			case name == "arq_error_frames_total":
				s.ErrorFrames[label(m, "code")] += v
			case name == "arq_spine_connected", name == "arq_spine_reconnects_total", name == "arq_spine_publish_errors_total",
				name == "arq_spine_published_total", name == "arq_spine_received_total", name == "arq_spine_dropped_total":
				s.Spine[strings.TrimPrefix(name, "arq_spine_")] += v
			case name == "arq_brain_store_up", name == "arq_brain_nodes", name == "arq_brain_node_members",
				name == "arq_brain_joins_total", name == "arq_brain_leaves_total", name == "arq_brain_errors_total":
				s.BrainState[strings.TrimPrefix(name, "arq_brain_")] += v
			case name == "arq_messages_in_total", name == "arq_messages_out_total", name == "arq_slow_consumers_total",
				name == "arq_messages_dropped_total", name == "arq_connections_accepted_total", name == "arq_bytes_out_total",
				name == "arq_protocol_errors_total", name == "arq_disconnects_total", name == "arq_panics_total":
				s.Counters[strings.TrimPrefix(name, "arq_")] += v
			}
		}
	}
	return s
}

// metricValue is in status.go.

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
