package brain

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the brain's Prometheus collectors.
type metrics struct {
	joins        prometheus.Counter
	leaves       *prometheus.CounterVec
	queries      *prometheus.CounterVec
	batches      *prometheus.CounterVec
	merged       prometheus.Counter
	queueFull    prometheus.Counter
	errors       *prometheus.CounterVec
	syncs        prometheus.Counter
	nodesDown    prometheus.Counter
	nodes        prometheus.Gauge
	nodeMembers  *prometheus.GaugeVec
	storeUp      prometheus.Gauge
	storeSeconds *prometheus.HistogramVec
	heartbeatLag prometheus.Histogram

	reg prometheus.Registerer
	all []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{
		joins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_brain_joins_total", Help: "Presence joins applied and published by this brain."}),
		leaves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_brain_leaves_total", Help: "Presence leaves applied and published by this brain, by reason."}, []string{"reason"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_brain_queries_total", Help: "Presence queries answered, by kind (members, count, unavailable, invalid)."}, []string{"kind"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_brain_batches_total", Help: "Node batches applied, by outcome (applied, duplicate, gap, stale-epoch)."}, []string{"status"}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_brain_queue_full_total", Help: "Node batches that waited because QueueOps ops were already queued (NATS then holds, and beyond its limit drops, the stream: repaired by snapshots)."}),
		merged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_brain_batches_merged_total", Help: "Node batches applied in the store call of an earlier batch of the node (queued behind it)."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_brain_errors_total", Help: "Brain errors, by kind."}, []string{"kind"}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_brain_sync_requests_total", Help: "Snapshots asked of gateway nodes."}),
		nodesDown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_brain_nodes_expired_total", Help: "Gateway nodes whose heartbeats stopped (members removed)."}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arq_brain_nodes", Help: "Gateway nodes this brain hears from."}),
		nodeMembers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arq_brain_node_members", Help: "Presence members per gateway node (from its heartbeats)."}, []string{"node"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arq_brain_store_up", Help: "1 when the presence store answered the last check."}),
		storeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "arq_brain_store_duration_seconds",
			Help:    "Presence store call latency, by operation.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 500e-3, 2},
		}, []string{"op"}),
		heartbeatLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "arq_brain_heartbeat_lag_seconds",
			Help:    "Time from a gateway's heartbeat sent to this brain handling it.",
			Buckets: []float64{100e-6, 1e-3, 5e-3, 25e-3, 100e-3, 500e-3, 1, 2, 5},
		}),
	}
	m.all = []prometheus.Collector{m.joins, m.leaves, m.queries, m.batches, m.merged, m.queueFull, m.errors, m.syncs,
		m.nodesDown, m.nodes, m.nodeMembers, m.storeUp, m.storeSeconds, m.heartbeatLag}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	for i, c := range m.all {
		if err := r.Register(c); err != nil {
			for _, d := range m.all[:i] {
				r.Unregister(d)
			}
			return fmt.Errorf("brain: metrics: %w", err)
		}
	}
	m.reg = r
	return nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all {
		m.reg.Unregister(c)
	}
}
