package gateway

import (
	"github.com/cloudwego/netpoll"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/pb"
)

// metrics are the gateway's Prometheus collectors. Every limit hit,
// timeout and error frame is counted.
type metrics struct {
	connections        prometheus.Gauge
	accepted           prometheus.Counter
	handshakeFailures  *prometheus.CounterVec
	messagesIn         prometheus.Counter
	messagesOut        prometheus.Counter
	framesIn           prometheus.Counter
	bytesOut           prometheus.Counter
	writeStalls        prometheus.Counter
	writes             prometheus.Counter
	frameErrors        *prometheus.CounterVec
	limits             *prometheus.CounterVec
	timeouts           *prometheus.CounterVec
	protocolError      prometheus.Counter
	slowConsumers      prometheus.Counter
	dropped            prometheus.Counter
	panics             prometheus.Counter
	subscriptions      prometheus.Gauge
	spinePublishErrors prometheus.Counter
	routeSeconds       prometheus.Histogram
	policyDenies       *prometheus.CounterVec
	capabilityDenies   *prometheus.CounterVec
	disconnects        prometheus.Counter
	all                []prometheus.Collector
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arq_connections", Help: "Open WebSocket connections (upgraded)."}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_connections_accepted_total", Help: "TCP connections accepted."}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_handshake_failures_total", Help: "Upgrades refused, by reason."}, []string{"reason"}),
		messagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_messages_in_total", Help: "Publishes accepted from clients of this node."}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_messages_out_total", Help: "Messages queued for delivery to clients of this node."}),
		framesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_frames_in_total", Help: "Data messages received from clients."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_bytes_out_total", Help: "Bytes written to client sockets."}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_socket_writes_total", Help: "Write system calls to client sockets (arq_messages_out_total / this = frames per write)."}),
		writeStalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_write_stalls_total", Help: "Writes that found a client's socket buffer full and waited for it to drain."}),
		frameErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_error_frames_total", Help: "ERROR frames sent, by code."}, []string{"code"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_limit_hits_total", Help: "Limits hit, by limit."}, []string{"limit"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_timeouts_total", Help: "Connections closed by a deadline, by kind."}, []string{"kind"}),
		protocolError: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_protocol_errors_total", Help: "WebSocket protocol violations (connection closed)."}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_slow_consumers_total", Help: "Connections closed because their outbound buffer filled."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_messages_dropped_total", Help: "Messages dropped for a full outbound buffer (drop mode)."}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_panics_total", Help: "Panics recovered while handling a connection."}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arq_subscriptions", Help: "Active subscriptions on this node."}),
		spinePublishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_spine_publish_errors_total", Help: "Publishes that could not be handed to NATS."}),
		routeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "arq_route_duration_seconds",
			Help:    "Time from a publish decoded to the last local enqueue.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3},
		}),
	}
	m.policyDenies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arq_policy_denies_total", Help: "Requests denied by policy, by action and code."}, []string{"action", "code"})
	m.disconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "arq_disconnects_total", Help: "Connections closed on a backend's or operator's request (Gateway.Disconnect)."})
	m.capabilityDenies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arq_capability_denies_total", Help: "Operations refused by the token's capabilities (AUTHORIZATION_DENIED), by action: sub, pub, presence, presence_query, personal."}, []string{"action"})
	m.all = []prometheus.Collector{m.policyDenies, m.capabilityDenies, m.disconnects, m.connections, m.accepted, m.handshakeFailures, m.messagesIn, m.messagesOut,
		m.framesIn, m.bytesOut, m.writes, m.writeStalls, m.frameErrors, m.limits, m.timeouts, m.protocolError, m.slowConsumers, m.dropped,
		m.panics, m.subscriptions, m.spinePublishErrors, m.routeSeconds,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_accept_out_of_fds_total",
			Help: "Accepts that failed because the process (or system) was out of file descriptors; the listener retries with back-off. Counted per process."},
			func() float64 { return float64(netpoll.OutOfFDAccepts()) })}
	if s := g.spine; s != nil {
		m.all = append(m.all,
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_published_total", Help: "Envelopes published to NATS."},
				func() float64 { return float64(s.Stats.Published.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_unheard_total", Help: "Publishes not sent to NATS because no other node listens to their subject."},
				func() float64 { return float64(s.Stats.Unheard.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_received_total", Help: "Envelopes received from other nodes."},
				func() float64 { return float64(s.Stats.Received.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_skipped_own_total", Help: "Envelopes this node originated, skipped."},
				func() float64 { return float64(s.Stats.SkippedOwn.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_marshal_errors_total", Help: "Envelopes that failed to marshal or publish in the spine."},
				func() float64 { return float64(s.Stats.PublishErrors.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_decode_errors_total", Help: "Envelopes that failed to decode or whose tenant did not match their subject."},
				func() float64 { return float64(s.Stats.DecodeErrors.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_dropped_total", Help: "Messages from NATS dropped because this node's inbound queue was full (slow consumer)."},
				func() float64 { return float64(s.DroppedMessages()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_lost_disconnected_total", Help: "Publishes lost because NATS was away and the reconnect buffer was full (also counted in arq_spine_marshal_errors_total)."},
				func() float64 { return float64(s.Stats.LostDisconnected.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_spine_subscriptions_lingering", Help: "Of arq_spine_subscriptions, those with no local subscriber kept for [nats] linger."},
				func() float64 { return float64(s.Lingering()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_spine_subscriptions", Help: "NATS subscriptions carrying this node's interest (one per subscribed pattern, or per tenant in tenant mode), lingering ones included."},
				func() float64 { return float64(s.Subscriptions()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_spine_interest_nodes", Help: "Other gateway nodes this node knows through the interest protocol."},
				func() float64 { return float64(s.Interest().Nodes) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_spine_interest_patterns", Help: "Patterns the other nodes listen to, as this node knows them."},
				func() float64 { return float64(s.Interest().Entries) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_spine_interest_open", Help: "1 while publishes no other node listens to are skipped; 0 while everything is sent (warm-up, NATS away, a node being synced)."},
				func() float64 {
					if s.Interest().Open {
						return 1
					}
					return 0
				}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_interest_ack_timeouts_total", Help: "New patterns acknowledged to clients without every known node's answer (AckTimeout)."},
				func() float64 { return float64(s.Interest().AckTimeouts) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_interest_syncs_total", Help: "Interest snapshots requested from other nodes (new nodes, missed changes)."},
				func() float64 { return float64(s.Interest().Syncs) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arq_spine_reconnects_total", Help: "Reconnections of this node's NATS connection."},
				func() float64 { return float64(s.Reconnects()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_spine_connected", Help: "1 while connected to NATS."},
				func() float64 {
					if s.Ready() {
						return 1
					}
					return 0
				}),
		)
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range m.all {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) handshakeFail(reason string) { m.handshakeFailures.WithLabelValues(reason).Inc() }
func (m *metrics) limit(name string)           { m.limits.WithLabelValues(name).Inc() }
func (m *metrics) frameError(code pb.ErrorCode) {
	m.frameErrors.WithLabelValues(pb.CodeName(code)).Inc()
}
