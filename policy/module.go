package policy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// module is one loaded policy file: compiled code, what its exports declare,
// and its pool of instances. A module whose file failed to load is a broken
// placeholder that denies every request with its load failure reason.
type module struct {
	e      *Engine
	name   string // path relative to Config.Dir, "/"-separated
	tenant string // "" for a global policy
	hash   [sha256.Size]byte

	compiled     wazero.CompiledModule
	needsPayload bool
	actions      uint32     // bit (1 << PolicyAction) per action decided
	broken       failReason // != reasonNone: a placeholder
	loadErr      *LoadError

	idle  chan *instance
	slots chan struct{}

	retired  atomic.Bool
	mu       sync.Mutex // guards live, released; serializes retirement with creation
	live     int
	released bool
	drained  chan struct{} // closed when retired with no live instance

	logs    rateLimiter // arqon.log lines
	reports rateLimiter // fail-closed log lines
}

// expected signatures of the ABI's exports.
var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64

	exportSigs = []struct {
		name            string
		required        bool
		params, results []api.ValueType
	}{
		{ExportABIVersion, true, nil, []api.ValueType{i32}},
		{ExportAlloc, true, []api.ValueType{i32}, []api.ValueType{i32}},
		{ExportDecide, true, []api.ValueType{i32, i32}, []api.ValueType{i64}},
		{ExportNeedsPayload, false, nil, []api.ValueType{i32}},
		{ExportActions, false, nil, []api.ValueType{i32}},
	}
)

// newModule allocates a module's bookkeeping.
func (e *Engine) newModule(name, tenant string, hash [sha256.Size]byte) *module {
	return &module{
		e: e, name: name, tenant: tenant, hash: hash,
		actions: actionsAll,
		idle:    make(chan *instance, e.cfg.PoolSize),
		slots:   make(chan struct{}, e.cfg.PoolSize),
		drained: make(chan struct{}),
	}
}

// brokenModule returns a placeholder that denies with le's reason.
func (e *Engine) brokenModule(name, tenant string, hash [sha256.Size]byte, r failReason, le *LoadError) *module {
	m := e.newModule(name, tenant, hash)
	m.broken, m.loadErr = r, le
	m.retired.Store(true)
	m.released = true
	close(m.drained)
	return m
}

// loadModule compiles and validates bin and creates its first instance. On
// failure it returns the fail-closed reason and a *LoadError.
func (e *Engine) loadModule(ctx context.Context, name, tenant string, bin []byte) (*module, failReason, *LoadError) {
	m := e.newModule(name, tenant, sha256.Sum256(bin))
	compiled, err := e.rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, reasonCompile, loadErr(name, reasonCompile, "%w", err)
	}
	m.compiled = compiled
	fail := func(r failReason, format string, args ...any) (*module, failReason, *LoadError) {
		_ = compiled.Close(ctx)
		return nil, r, loadErr(name, r, format, args...)
	}

	for _, f := range compiled.ImportedFunctions() {
		mod, fn, _ := f.Import()
		if mod != ImportModule || fn != ImportLog {
			return fail(reasonBadImport, "imports %s.%s: policies may import only %s.%s", mod, fn, ImportModule, ImportLog)
		}
		if !slices.Equal(f.ParamTypes(), []api.ValueType{i32, i32}) || len(f.ResultTypes()) != 0 {
			return fail(reasonBadImport, "imports %s.%s with the wrong type", mod, fn)
		}
	}
	if len(compiled.ImportedMemories()) > 0 {
		return fail(reasonBadImport, "imports a memory")
	}
	mem, ok := compiled.ExportedMemories()[ExportMemory]
	if !ok {
		return fail(reasonMissingExport, "no exported memory %q", ExportMemory)
	}
	if mem.Min() > e.cfg.MaxMemoryPages {
		return fail(reasonMemoryLimit, "memory needs %d pages, the limit is %d", mem.Min(), e.cfg.MaxMemoryPages)
	}
	fns := compiled.ExportedFunctions()
	for _, s := range exportSigs {
		f, ok := fns[s.name]
		if !ok {
			if s.required {
				return fail(reasonMissingExport, "no exported function %s", s.name)
			}
			continue
		}
		if !slices.Equal(f.ParamTypes(), s.params) || !slices.Equal(f.ResultTypes(), s.results) {
			return fail(reasonBadSignature, "%s has type %v -> %v, want %v -> %v",
				s.name, f.ParamTypes(), f.ResultTypes(), s.params, s.results)
		}
	}

	// The handshake runs on the first instance, under the load budget.
	m.slots <- struct{}{}
	in, err := m.newInstance()
	if err != nil {
		return fail(instantiateReason(err), "instantiate: %w", err)
	}
	r, v := in.query(ExportABIVersion, 0, e.cfg.LoadTimeout)
	if r == reasonNone && v != ABIVersion {
		in.close()
		return fail(reasonABIVersion, "ABI version %d, this host speaks %d", int32(v), ABIVersion)
	}
	if r == reasonNone {
		var np uint64
		r, np = in.query(ExportNeedsPayload, 1, e.cfg.LoadTimeout)
		m.needsPayload = np != 0
	}
	if r == reasonNone {
		var act uint64
		r, act = in.query(ExportActions, uint64(actionsAll), e.cfg.LoadTimeout)
		m.actions = uint32(act)
	}
	if r != reasonNone {
		in.close()
		return fail(r, "ABI handshake failed: %s", r)
	}
	m.idle <- in
	return m, reasonNone, nil
}

// instantiateReason classifies an instantiation error.
func instantiateReason(err error) failReason {
	if r := classify(err); r != reasonTrap {
		return r
	}
	if le, ok := err.(*instanceError); ok {
		return le.reason
	}
	return reasonInstantiate
}

// instanceError is a failure after instantiation (the allocator handshake).
type instanceError struct {
	reason failReason
}

// Error implements error.
func (e *instanceError) Error() string { return "policy: " + e.reason.String() }

// newInstance instantiates the module and sets up its request buffer. The
// caller holds a slot, which is released on failure.
func (m *module) newInstance() (*instance, error) {
	m.mu.Lock()
	if m.retired.Load() {
		m.mu.Unlock()
		<-m.slots
		return nil, errRetired
	}
	m.live++
	m.mu.Unlock()

	e := m.e
	in := &instance{m: m, stack: make([]uint64, 2)}
	in.ctx = newCallCtx(m)
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), moduleKey{}, m), e.cfg.LoadTimeout)
	defer cancel()
	ctx = experimental.WithMemoryAllocator(ctx, memoryAllocator(uint64(e.cfg.MaxMemoryPages)*65536,
		func(lm *limitedMemory) { in.lm = lm }))
	mod, err := e.rt.InstantiateModule(ctx, m.compiled, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		in.ctx.timer.Stop()
		if in.lm != nil && in.lm.breached {
			err = &instanceError{reasonMemoryLimit}
		}
		m.instanceGone()
		return nil, err
	}
	in.mod = mod
	in.mem = mod.Memory()
	in.decideFn = mod.ExportedFunction(ExportDecide)
	in.allocFn = mod.ExportedFunction(ExportAlloc)
	if in.mem == nil || in.lm == nil || in.decideFn == nil || in.allocFn == nil {
		m.discard(in)
		return nil, &instanceError{reasonMissingExport}
	}
	if r := in.ensureBuf(0, e.cfg.LoadTimeout); r != reasonNone {
		m.discard(in)
		return nil, &instanceError{r}
	}
	return in, nil
}

// query calls an optional export that takes nothing and returns an i32, and
// returns def if it is not exported.
func (in *instance) query(name string, def uint64, d time.Duration) (failReason, uint64) {
	fn := in.mod.ExportedFunction(name)
	if fn == nil {
		return reasonNone, def
	}
	if r := in.call(fn, d); r != reasonNone {
		return r, 0
	}
	return reasonNone, uint64(uint32(in.stack[0]))
}

// decide runs this module for req. retry is true if the module was retired
// while the caller waited for an instance.
func (m *module) decide(ctx context.Context, req *pb.PolicyRequest) (d Decision, fr failReason, retry bool) {
	if m.broken != reasonNone {
		m.e.report(m, m.broken, m.loadErr)
		return Decision{}, m.broken, false
	}
	in, err := m.get(ctx)
	if err != nil {
		switch {
		case err == errRetired:
			return Decision{}, reasonNone, true
		case ctx.Err() != nil:
			return Decision{}, reasonCanceled, false
		}
		m.e.report(m, instantiateReason(err), err)
		return Decision{}, instantiateReason(err), false
	}
	r, fr := in.decide(req, m.e.cfg.Timeout)
	if fr != reasonNone {
		m.discard(in)
		m.e.report(m, fr, nil)
		return Decision{}, fr, false
	}
	if r == 0 {
		m.put(in)
		return decisionAllow, reasonNone, false
	}
	d, ok := in.denial(r)
	if !ok {
		m.discard(in)
		m.e.report(m, reasonBadReturn, fmt.Errorf("arqon_decide returned %#x", r))
		return Decision{}, reasonBadReturn, false
	}
	m.put(in)
	return d, reasonNone, false
}
