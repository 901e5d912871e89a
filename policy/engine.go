package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/tetratelabs/wazero"
)

// Engine loads policies and answers Decide. It is safe for concurrent use.
type Engine struct {
	cfg   Config
	rt    wazero.Runtime
	cache wazero.CompilationCache
	log   *slog.Logger
	met   *metrics

	defaultDecision Decision
	defaultOutcome  outcome

	state  atomic.Pointer[snapshot] // nil once closed
	closed atomic.Bool

	reloadMu    sync.Mutex // guards files, lastScanErr, starting; serializes scans
	files       map[string]*fileState
	lastScanErr string
	starting    bool // the first scan, from New, is running

	stop chan struct{}
	wg   sync.WaitGroup
}

// maxRetries bounds how often Decide restarts a chain because a reload
// retired a module under it.
const maxRetries = 16

// New loads the policies in cfg.Dir and starts polling it. A module that
// fails to load is an error here (fail fast at start), unlike at a reload.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:   cfg,
		log:   cfg.Logger,
		met:   met,
		files: map[string]*fileState{},
		stop:  make(chan struct{}),
	}
	if cfg.Default == DenyAll {
		e.defaultDecision, e.defaultOutcome = decisionDefaultDeny, outcomeDefaultDeny
	} else {
		e.defaultDecision, e.defaultOutcome = decisionAllow, outcomeDefaultAllow
	}
	fail := func(err error) (*Engine, error) {
		if cfg.Registerer != nil {
			met.unregister(cfg.Registerer)
		}
		if e.rt != nil {
			_ = e.rt.Close(ctx)
		}
		if e.cache != nil {
			_ = e.cache.Close(ctx)
		}
		return nil, err
	}

	rc := wazero.NewRuntimeConfig(). // the compiler where the platform has one
						WithCloseOnContextDone(true)
	if cfg.CacheDir != "" {
		e.cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return fail(fmt.Errorf("policy: compilation cache: %w", err))
		}
		rc = rc.WithCompilationCache(e.cache)
	}
	e.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if err := e.instantiateHost(ctx); err != nil {
		return fail(fmt.Errorf("policy: host module: %w", err))
	}

	e.state.Store(buildSnapshot(1, e.files))
	if cfg.Dir != "" {
		if info, err := os.Stat(cfg.Dir); err != nil {
			return fail(fmt.Errorf("policy: %w", err))
		} else if !info.IsDir() {
			return fail(fmt.Errorf("policy: %s is not a directory", cfg.Dir))
		}
		e.reloadMu.Lock()
		e.starting = true
		err := e.scan(ctx, true)
		e.starting = false
		e.reloadMu.Unlock()
		if err != nil {
			for _, m := range e.state.Load().modules {
				m.retire()
			}
			return fail(err)
		}
		if cfg.ReloadInterval > 0 {
			e.wg.Add(1)
			go e.poll(cfg.ReloadInterval)
		}
	}
	e.met.modules.Set(float64(len(e.files)))
	return e, nil
}

// poll scans the directory every interval until Close.
func (e *Engine) poll(interval time.Duration) {
	defer e.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.reloadMu.Lock()
			if !e.closed.Load() {
				_ = e.scan(context.Background(), false) // errors are counted and logged
			}
			e.reloadMu.Unlock()
		}
	}
}

// Reload scans the policy directory now, re-reading every file. It returns
// the load errors of all files currently broken (nil if none); a broken file
// that replaced a good version leaves that version in force.
func (e *Engine) Reload() error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	if e.closed.Load() {
		return ErrClosed
	}
	return e.scan(context.Background(), true)
}

// Decide runs the chain of policies for req.Tenant and req.Action; the first
// deny wins. A request no policy covers gets Config.Default. It is safe for
// concurrent use; req must not be modified during the call.
//
// ctx is checked before each policy call (a done ctx is a deny, reason
// "canceled"); a call in progress is bounded by Config.Timeout.
func (e *Engine) Decide(ctx context.Context, req *pb.PolicyRequest) Decision {
	a := req.GetAction()
	if a < pb.PolicyAction_POLICY_ACTION_CONNECT || a > pb.PolicyAction_POLICY_ACTION_PUBLISH {
		return e.failClosed(nil, reasonBadRequest)
	}
	for try := 0; try < maxRetries; try++ {
		s := e.state.Load()
		if s == nil {
			return e.failClosed(nil, reasonClosed)
		}
		chain := s.lookup(req.Tenant).byAction[a]
		if len(chain) == 0 {
			e.met.decisions[e.defaultOutcome].Inc()
			return e.defaultDecision
		}
		d, fr, retry := e.run(ctx, chain, req)
		switch {
		case retry:
			continue
		case fr != reasonNone:
			return e.failClosedBy(d.Policy, fr)
		case d.Allow:
			e.met.decisions[outcomeAllow].Inc()
		default:
			e.met.decisions[outcomeDeny].Inc()
		}
		return d
	}
	return e.failClosed(nil, reasonClosed)
}

// run asks each module of chain in turn. On a failure d.Policy names the
// module.
func (e *Engine) run(ctx context.Context, chain []*module, req *pb.PolicyRequest) (d Decision, fr failReason, retry bool) {
	for _, m := range chain {
		if ctx.Err() != nil {
			return Decision{Policy: m.name}, reasonCanceled, false
		}
		d, fr, retry = m.decide(ctx, req)
		if retry {
			return Decision{}, reasonNone, true
		}
		if fr != reasonNone {
			return Decision{Policy: m.name}, fr, false
		}
		if !d.Allow {
			return d, reasonNone, false
		}
	}
	return decisionAllow, reasonNone, false
}

// failClosed counts and returns a fail-closed deny.
func (e *Engine) failClosed(m *module, r failReason) Decision {
	name := ""
	if m != nil {
		name = m.name
	}
	return e.failClosedBy(name, r)
}

// failClosedBy counts and returns a fail-closed deny by the named policy.
func (e *Engine) failClosedBy(policy string, r failReason) Decision {
	e.met.decisions[outcomeFailClosed].Inc()
	e.met.failClosed[r].Inc()
	return Decision{Code: CodePolicyError, Message: reasonMessages[r], Policy: policy, Reason: reasonNames[r]}
}

// NeedsPayload reports whether some PUBLISH policy of tenant reads the
// payload. When it is false the caller may leave PolicyRequest.payload empty
// (and must set payload_size).
func (e *Engine) NeedsPayload(tenant string) bool {
	s := e.state.Load()
	return s != nil && s.lookup(tenant).needsPayload
}

// HasPolicies reports whether any policy applies to tenant, for any action.
func (e *Engine) HasPolicies(tenant string) bool {
	s := e.state.Load()
	return s != nil && s.lookup(tenant).any
}

// HasPoliciesFor reports whether any policy applies to tenant for action;
// when none does, Decide answers Config.Default.
func (e *Engine) HasPoliciesFor(tenant string, action pb.PolicyAction) bool {
	s := e.state.Load()
	if s == nil || action < pb.PolicyAction_POLICY_ACTION_CONNECT || action > pb.PolicyAction_POLICY_ACTION_PUBLISH {
		return false
	}
	return len(s.lookup(tenant).byAction[action]) > 0
}

// Generation identifies the policy set in force: it changes whenever a reload
// adds, replaces or removes a policy. A caller that caches CONNECT or
// SUBSCRIBE decisions can tag them with it and drop them when it changes.
// It is 0 after Close.
func (e *Engine) Generation() uint64 {
	if s := e.state.Load(); s != nil {
		return s.gen
	}
	return 0
}

// PolicyInfo describes one policy in force.
type PolicyInfo struct {
	Name         string            // path relative to Config.Dir
	Tenant       string            // "" for a global policy
	SHA256       [32]byte          // of the file content in force (or that failed)
	NeedsPayload bool              // from arqon_needs_payload
	Actions      []pb.PolicyAction // the actions it decides, from arqon_actions
	// Broken is the load failure of a file with no good version: the policy
	// denies every request it covers. Nil otherwise.
	Broken *LoadError
	// LoadError is the failure of a newer content of the file that left this
	// version in force, or the same as Broken.
	LoadError *LoadError
}

// Policies lists the policies in force, in chain order (global first).
func (e *Engine) Policies() []PolicyInfo {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	var out []PolicyInfo
	for _, name := range sortedKeys(e.files) {
		st := e.files[name]
		m := st.mod
		pi := PolicyInfo{Name: m.name, Tenant: m.tenant, SHA256: m.hash, NeedsPayload: m.needsPayload, LoadError: st.err}
		if m.broken != reasonNone {
			pi.Broken = m.loadErr
		}
		for a := pb.PolicyAction_POLICY_ACTION_CONNECT; a <= pb.PolicyAction_POLICY_ACTION_PUBLISH; a++ {
			if m.actions&(1<<uint(a)) != 0 {
				pi.Actions = append(pi.Actions, a)
			}
		}
		out = append(out, pi)
	}
	return out
}

// Close stops polling, waits (until ctx is done) for calls in progress and
// releases every module. Decide after Close denies with reason "closed".
func (e *Engine) Close(ctx context.Context) error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(e.stop)
	e.wg.Wait()
	e.reloadMu.Lock()
	s := e.state.Swap(nil)
	e.reloadMu.Unlock()
	var waitErr error
	if s != nil {
		for _, m := range s.modules {
			m.retire()
		}
		for _, m := range s.modules {
			select {
			case <-m.drained:
			case <-ctx.Done():
				waitErr = ctx.Err()
			}
			if waitErr != nil {
				break
			}
		}
	}
	err := e.rt.Close(context.Background())
	if e.cache != nil {
		err = errors.Join(err, e.cache.Close(context.Background()))
	}
	if e.cfg.Registerer != nil {
		e.met.unregister(e.cfg.Registerer)
	}
	return errors.Join(waitErr, err)
}
