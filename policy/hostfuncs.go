package policy

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// maxLinesPerSecond caps arqon.log lines, and fail-closed reports, per
// module and second, so that a policy on the message path cannot flood the
// log.
const maxLinesPerSecond = 10

// rateLimiter lets through maxLinesPerSecond events per wall-clock second. It
// is approximate under concurrency, which is enough for logging.
type rateLimiter struct {
	second atomic.Int64
	n      atomic.Int32
}

// allow reports whether one more event fits in the current second.
func (l *rateLimiter) allow() bool {
	now := time.Now().Unix()
	if l.second.Load() != now {
		l.second.Store(now)
		l.n.Store(0)
	}
	return l.n.Add(1) <= maxLinesPerSecond
}

// instantiateHost instantiates the only host module a policy may import:
// arqon.log(ptr, len), which writes the guest's text to the engine's logger
// at Info level. There is no WASI: no filesystem, network, clock or
// randomness.
func (e *Engine) instantiateHost(ctx context.Context) error {
	_, err := e.rt.NewHostModuleBuilder(ImportModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(e.hostLog), []api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, nil).
		WithParameterNames("ptr", "len").
		Export(ImportLog).
		Instantiate(ctx)
	return err
}

// hostLog implements arqon.log. Out-of-range pointers are ignored; lines are
// cut at MaxLogLen bytes and rate-limited per module.
func (e *Engine) hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := uint32(stack[0]), uint32(stack[1])
	m, _ := ctx.Value(moduleKey{}).(*module)
	if m == nil {
		return
	}
	if !m.logs.allow() {
		e.met.logDropped.Inc()
		return
	}
	if n > MaxLogLen {
		n = MaxLogLen
	}
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		return
	}
	e.log.Info("policy log", "policy", m.name, "msg", string(b))
}

// report logs a fail-closed event of module m, rate-limited per module.
func (e *Engine) report(m *module, r failReason, err error) {
	if r == reasonCanceled || !m.reports.allow() {
		return
	}
	if err != nil {
		e.log.Warn("policy failed closed", "policy", m.name, "reason", r.String(), "err", err)
		return
	}
	e.log.Warn("policy failed closed", "policy", m.name, "reason", r.String())
}
