package policy

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// outcome labels arqon_policy_decisions_total.
type outcome uint8

const (
	outcomeAllow outcome = iota
	outcomeDeny
	outcomeFailClosed
	outcomeDefaultAllow
	outcomeDefaultDeny
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"allow", "deny", "fail_closed", "default_allow", "default_deny"}

// metrics are one engine's Prometheus metrics. The hot path only calls Inc on
// counters resolved here, so counting does not allocate.
type metrics struct {
	decisions    [numOutcomes]prometheus.Counter
	failClosed   [numReasons]prometheus.Counter
	reloadErrors prometheus.Counter
	reloads      prometheus.Counter
	modules      prometheus.Gauge
	logDropped   prometheus.Counter

	collectors []prometheus.Collector
}

// newMetrics builds the metrics and registers them with reg if it is not nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arqon_policy_decisions_total",
		Help: "Policy decisions by outcome (allow, deny, fail_closed, default_allow, default_deny).",
	}, []string{"outcome"})
	failClosed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arqon_policy_fail_closed_total",
		Help: "Fail-closed policy denies by reason (trap, timeout, memory_limit, bad_return, compile, ...).",
	}, []string{"reason"})
	m := &metrics{
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arqon_policy_reload_errors_total",
			Help: "Policy files that failed to load (counted once per distinct file content).",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arqon_policy_reloads_total",
			Help: "Policy set swaps (a module added, replaced or removed).",
		}),
		modules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arqon_policy_modules",
			Help: "Policy modules in force, including placeholders for files that failed to load.",
		}),
		logDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arqon_policy_log_dropped_total",
			Help: "arqon.log lines dropped by the per-module rate limit.",
		}),
	}
	for i := range m.decisions {
		m.decisions[i] = decisions.WithLabelValues(outcomeNames[i])
	}
	for i := reasonTrap; i < numReasons; i++ {
		m.failClosed[i] = failClosed.WithLabelValues(reasonNames[i])
	}
	m.failClosed[reasonNone] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
	m.collectors = []prometheus.Collector{decisions, failClosed, m.reloadErrors, m.reloads, m.modules, m.logDropped}
	if reg != nil {
		for i, c := range m.collectors {
			if err := reg.Register(c); err != nil {
				for _, done := range m.collectors[:i] {
					reg.Unregister(done)
				}
				return nil, errors.Join(errors.New("policy: register metrics"), err)
			}
		}
	}
	return m, nil
}

// unregister removes the metrics from reg.
func (m *metrics) unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}
