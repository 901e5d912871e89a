package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/arqonbus/arqonbus/pb"
)

// tenantsDir is the subdirectory of Config.Dir that holds per-tenant chains.
const tenantsDir = "tenants"

// snapshot is an immutable set of chains; Decide reads the current one with
// one atomic load and a reload swaps in a new one.
type snapshot struct {
	gen     uint64 // Engine.Generation
	global  chainSet
	tenants map[string]*chainSet
	modules []*module // every module in force, for Close
}

// chainSet is the chains of one tenant (or of tenants without their own
// directory), by action.
type chainSet struct {
	byAction     [pb.PolicyAction_POLICY_ACTION_PUBLISH + 1][]*module
	needsPayload bool // some PUBLISH policy reads the payload
	any          bool // some policy applies
}

// lookup returns the chains for tenant.
func (s *snapshot) lookup(tenant string) *chainSet {
	if cs, ok := s.tenants[tenant]; ok {
		return cs
	}
	return &s.global
}

// newChainSet builds the chains of an ordered list of modules.
func newChainSet(mods []*module) chainSet {
	var cs chainSet
	for a := pb.PolicyAction_POLICY_ACTION_CONNECT; a <= pb.PolicyAction_POLICY_ACTION_PUBLISH; a++ {
		for _, m := range mods {
			if m.actions&(1<<uint(a)) != 0 {
				cs.byAction[a] = append(cs.byAction[a], m)
				cs.any = true
				if a == pb.PolicyAction_POLICY_ACTION_PUBLISH && m.needsPayload {
					cs.needsPayload = true
				}
			}
		}
	}
	return cs
}

// buildSnapshot orders the loaded files into chains: global files by name,
// then each tenant's files by name.
func buildSnapshot(gen uint64, files map[string]*fileState) *snapshot {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	s := &snapshot{gen: gen, tenants: map[string]*chainSet{}}
	var global []*module
	perTenant := map[string][]*module{}
	for _, name := range names {
		m := files[name].mod
		s.modules = append(s.modules, m)
		if m.tenant == "" {
			global = append(global, m)
		} else {
			perTenant[m.tenant] = append(perTenant[m.tenant], m)
		}
	}
	s.global = newChainSet(global)
	for t, mods := range perTenant {
		cs := newChainSet(append(append([]*module(nil), global...), mods...))
		s.tenants[t] = &cs
	}
	return s
}

// fileState is what the loader knows about one policy file.
type fileState struct {
	size  int64
	mtime time.Time
	hash  [sha256.Size]byte // of the content last tried
	mod   *module           // in force: the last good version, or a broken placeholder
	err   *LoadError        // the content last tried failed to load
}

// found is a policy file seen by a scan.
type found struct {
	name   string // relative to Config.Dir, "/"-separated
	tenant string
	path   string
	info   os.FileInfo
}

// list finds the policy files under dir: dir/*.wasm and
// dir/tenants/<tenant>/*.wasm. Names starting with "." are skipped.
func list(dir string) ([]found, error) {
	var out []found
	add := func(sub, tenant string) error {
		entries, err := os.ReadDir(filepath.Join(dir, filepath.FromSlash(sub)))
		if err != nil {
			return err
		}
		for _, de := range entries {
			n := de.Name()
			if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".wasm") {
				continue
			}
			p := filepath.Join(dir, filepath.FromSlash(sub), n)
			info, err := os.Stat(p) // follows symlinks
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue // removed while listing
				}
				return err
			}
			if !info.Mode().IsRegular() {
				continue
			}
			out = append(out, found{name: path.Join(sub, n), tenant: tenant, path: p, info: info})
		}
		return nil
	}
	if err := add("", ""); err != nil {
		return nil, err
	}
	tenants, err := os.ReadDir(filepath.Join(dir, tenantsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, de := range tenants {
		t := de.Name()
		if strings.HasPrefix(t, ".") {
			continue
		}
		if info, err := os.Stat(filepath.Join(dir, tenantsDir, t)); err != nil || !info.IsDir() {
			continue
		}
		if err := add(path.Join(tenantsDir, t), t); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	// Files that vanished while listing count as deleted only if the
	// directory itself is still there.
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	return out, nil
}

// readFile reads a policy file, refusing ones over MaxModuleBytes.
func readFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxModuleBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxModuleBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxModuleBytes)
	}
	return b, nil
}

// scan brings the loaded set in line with the directory. With force, every
// file is re-read and compared by hash; otherwise only files whose size or
// modification time changed. It swaps in a new snapshot if anything changed,
// and returns the load errors of every file currently broken.
//
// Assumes e.reloadMu is held.
func (e *Engine) scan(ctx context.Context, force bool) error {
	if e.cfg.Dir == "" {
		return nil
	}
	files, err := list(e.cfg.Dir)
	if err != nil {
		// A vanished or unreadable directory keeps the policies in force.
		// It is counted and logged once until the error changes.
		if msg := err.Error(); msg != e.lastScanErr {
			e.lastScanErr = msg
			e.met.reloadErrors.Inc()
			e.log.Error("policy reload failed; policies in force stay", "dir", e.cfg.Dir, "err", err)
		}
		return fmt.Errorf("policy: scan %s: %w", e.cfg.Dir, err)
	}
	e.lastScanErr = ""
	changed := false
	var retired []*module
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		seen[f.name] = true
		prev := e.files[f.name]
		if prev != nil && !force && prev.size == f.info.Size() && prev.mtime.Equal(f.info.ModTime()) {
			continue
		}
		bin, err := readFile(f.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				delete(seen, f.name) // removed since listing: handled below
				continue
			}
			bin = nil
		}
		hash := sha256.Sum256(bin)
		if prev != nil && bin != nil && prev.hash == hash {
			prev.size, prev.mtime = f.info.Size(), f.info.ModTime()
			continue
		}
		var m *module
		var le *LoadError
		r := reasonCompile
		if err != nil {
			le = loadErr(f.name, reasonCompile, "read: %w", err)
		} else {
			m, r, le = e.loadModule(ctx, f.name, f.tenant, bin)
		}
		st := &fileState{size: f.info.Size(), mtime: f.info.ModTime(), hash: hash}
		switch {
		case le == nil:
			st.mod = m
			if prev != nil {
				retired = append(retired, prev.mod)
			}
			e.log.Info("policy loaded", "policy", f.name, "needs_payload", m.needsPayload, "actions", actionNames(m.actions))
		case prev != nil && prev.mod.broken == reasonNone:
			// A broken replacement: the previous version stays in force.
			st.mod, st.err = prev.mod, le
			e.met.reloadErrors.Inc()
			e.log.Error("policy reload failed; previous version stays in force", "policy", f.name, "reason", le.Reason, "err", le.Err)
		default:
			// No good version to keep: a placeholder denies (fail-closed).
			st.mod, st.err = e.brokenModule(f.name, f.tenant, hash, r, le), le
			if prev != nil {
				retired = append(retired, prev.mod)
			}
			e.met.reloadErrors.Inc()
			if e.starting {
				e.log.Error("policy load failed", "policy", f.name, "reason", le.Reason, "err", le.Err)
			} else {
				e.log.Error("policy load failed; it denies every request it covers", "policy", f.name, "reason", le.Reason, "err", le.Err)
			}
		}
		if st.mod != prevMod(prev) {
			changed = true
		}
		e.files[f.name] = st
	}
	if _, err := os.Stat(e.cfg.Dir); err != nil {
		// The directory went away during the scan: delete nothing.
		for name := range e.files {
			seen[name] = true
		}
	}
	for name, st := range e.files {
		if !seen[name] {
			delete(e.files, name)
			retired = append(retired, st.mod)
			changed = true
			e.log.Info("policy removed", "policy", name)
		}
	}
	if changed {
		e.state.Store(buildSnapshot(e.state.Load().gen+1, e.files))
		e.met.reloads.Inc()
		e.met.modules.Set(float64(len(e.files)))
		for _, m := range retired {
			m.retire()
		}
	}
	var errs []error
	for _, name := range sortedKeys(e.files) {
		if st := e.files[name]; st.err != nil {
			errs = append(errs, st.err)
		}
	}
	return errors.Join(errs...)
}

// prevMod returns the module of a file state, nil for none.
func prevMod(st *fileState) *module {
	if st == nil {
		return nil
	}
	return st.mod
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]*fileState) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// actionNames renders an action mask for logs.
func actionNames(mask uint32) string {
	if mask == actionsAll {
		return "all"
	}
	var b bytes.Buffer
	for a := pb.PolicyAction_POLICY_ACTION_CONNECT; a <= pb.PolicyAction_POLICY_ACTION_PUBLISH; a++ {
		if mask&(1<<uint(a)) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.ToLower(strings.TrimPrefix(a.String(), "POLICY_ACTION_")))
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}
