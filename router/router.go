// Package router decides which subscribers receive a message: a set of
// subject tries, one per tenant, matched with NATS subject semantics.
//
// Subjects are dot-separated tokens ("orders.eu.created"). A subscription
// pattern may use "*" for exactly one token and, as its last token, ">" for
// one or more tokens. Each tenant has its own trie, so no pattern can match
// another tenant's subjects.
//
// The design follows nats-server's sublist: each trie node has literal
// children plus dedicated "*" and ">" children, and a bounded result cache is
// invalidated by a per-tenant generation counter. On top of that:
//
//   - Match allocates nothing in steady state. A cache hit takes no lock and
//     writes no shared memory (cache.go). A miss splits the subject into a
//     stack array (finding the dots eight bytes at a time), walks the trie
//     without a lock (the generation is a sequence lock), and returns a
//     node's subscriber slice itself (copy-on-write, so it stays an
//     immutable snapshot) or, when several nodes match, a concatenation kept
//     in a combo cache keyed by the slices it was built from.
//   - A trie has no node objects (node.go): a node is an id and a 16-byte
//     entry in a Swiss-table-like hash table of its depth, keyed by the hash
//     of its path from the root and checked against its parent's id and its
//     token (a token of up to seven bytes is compared as one word). So the
//     slots a Match probes depend on the subject only, lookups of absent
//     tokens read only dense tag bytes, and the nodes near the root, which
//     every Match reads, are packed together.
//   - Removing one of n values of a pattern is O(1) (position index for large
//     sets, swap-remove), unless a Match handed the set out since the last
//     change; then the set is copied once.
//   - The result cache is shared by all tenants and bounded (Config), so a
//     tenant costs no cache memory of its own.
//
// The caches may keep values that were removed reachable for the garbage
// collector until their entries are overwritten (a bounded number); they are
// never returned.
//
// Locks: each tenant trie has a sync.RWMutex (trie.mu) that writers hold;
// Match takes its read lock only when its lock-free walk keeps meeting them.
// The tenant table has a mutex for writers (tenantSet.mu); readers use it
// without locks. Lock order: tenantSet.mu, then trie.mu. The caches are
// lock-free.
package router

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// Config configures a Router. Zero fields mean defaults.
type Config struct {
	// CacheSize is the number of match results the Router caches, shared by
	// all tenants (rounded up to a power of two). Each entry takes about 200
	// bytes with its share of the combo and admission tables: the default
	// takes about 0.8 MiB, allocated by New. Zero means DefaultCacheSize; a
	// negative value disables the result cache (the combo cache stays, so
	// Match still does not allocate in steady state).
	CacheSize int
}

// Router is a set of per-tenant subject tries. T is the subscriber handle
// (for example a pointer to a connection). All methods are safe for
// concurrent use. Create Routers with New; the zero Router is not usable.
type Router[T comparable] struct {
	tenants tenantSet[T]
	cache   *resultCache[T] // nil when disabled
	combos  comboCache[T]
	count   atomic.Int64 // subscriptions
	nodes   atomic.Int64 // trie nodes, roots included
}

// New returns an empty Router.
func New[T comparable](cfg Config) *Router[T] {
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	r := &Router[T]{}
	r.tenants.tomb = new(trie[T])
	combos := 4 * DefaultCacheSize
	if size > 0 {
		r.cache = newResultCache[T](size)
		combos = max(1024, 4*size)
	}
	// Combined results are keyed by node contents, not by subject, so
	// many subjects share one; four per result cache entry keep the
	// steady-state misses of a working set a few times the result cache
	// free of allocations.
	r.combos = newComboCache[T](combos)
	return r
}

// deadBit marks the generation of a trie that was dropped from the tenant
// table; no cache entry carries it.
const deadBit = 1 << 63

// A trie holds one tenant's subscriptions (node.go).
type trie[T comparable] struct {
	// Read by lock-free readers: immutable, or atomic.
	name string
	hash uint64
	gen  atomic.Uint64            // sequence lock: odd while a writer changes ix
	ix   atomic.Pointer[index[T]] // nil until the first Insert
	root atomic.Uint64            // the root's flags
	_    [64 - 48]byte            // keep readers' line apart from mu

	mu    sync.RWMutex           // writers; readers only after a failed optimistic walk
	count int                    // subscriptions
	nodes int                    // nodes, root excluded (= used entries)
	w     []wrec                 // by node id
	free  []uint32               // ids below next that are free
	next  uint32                 // ids from next on were never handed out
	used  [MaxTokens]int         // nodes by depth-1
	tombs [MaxTokens]int         // deleted slots by depth-1
	idx   map[uint32]map[T]int32 // value positions of large subscriber sets
}

// dead reports whether t was dropped. Assumes t.mu is held.
func (t *trie[T]) dead() bool { return t.gen.Load()&deadBit != 0 }

// Count returns the number of subscriptions.
func (r *Router[T]) Count() int { return int(r.count.Load()) }

// NodeCount returns the number of trie nodes held, each tenant's root
// included; it is 0 when the Router is empty.
func (r *Router[T]) NodeCount() int { return int(r.nodes.Load()) }

// A path is a split pattern: its tokens and their keys.
type path struct {
	toks [MaxTokens]string
	keys [MaxTokens]uint64
	n    int
}

// splitPath splits a validated pattern.
func splitPath(s string, p *path) {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			p.toks[p.n] = s[start:i]
			p.keys[p.n] = tokenKey(s, start, i)
			p.n++
			start = i + 1
		}
	}
}

// prepare validates tenant and pattern for Insert and Remove, splits
// pattern into p and returns the tenant's hash.
func prepare(tenant, pattern string, p *path) (uint64, error) {
	if tenant == "" {
		return 0, ErrEmptyTenant
	}
	if err := ValidatePattern(pattern); err != nil {
		return 0, err
	}
	splitPath(pattern, p)
	return strhash(tenant, hashSeed), nil
}

// Insert adds v under pattern in tenant. It validates pattern (see
// ValidatePattern) and tenant (non-empty). Inserting a (tenant, pattern, v)
// that is already there returns ErrExists and changes nothing.
func (r *Router[T]) Insert(tenant, pattern string, v T) error {
	var p path
	th, err := prepare(tenant, pattern, &p)
	if err != nil {
		return err
	}
	for {
		t := r.tenants.lookup(th, tenant)
		if t == nil {
			t = r.tenants.create(th, tenant, r)
		}
		t.mu.Lock()
		if t.dead() {
			t.mu.Unlock()
			continue // dropped meanwhile: a new trie takes its place
		}
		err := r.insert(t, &p, v)
		t.mu.Unlock()
		return err
	}
}

// descend follows p from the root as far as nodes exist. It returns the
// number of tokens followed, the last node and its path hash.
func (t *trie[T]) descend(ix *index[T], p *path) (int, uint32, uint64) {
	id, h := uint32(0), rootHash
	if ix == nil {
		return 0, id, h
	}
	for i := 0; i < p.n; i++ {
		hc := step(h, p.keys[i])
		c, _ := ix.find(i, hc, id, p.keys[i], p.toks[i])
		if c == 0 {
			return i, id, h
		}
		id, h = c, hc
	}
	return p.n, id, h
}

// insert adds v at the node of p. Assumes t.mu is write-locked.
func (r *Router[T]) insert(t *trie[T], p *path, v T) error {
	ix := t.ix.Load()
	i, id, h := t.descend(ix, p)
	if i == p.n && t.findSub(ix, id, v) >= 0 {
		return ErrExists
	}
	t.gen.Add(1) // odd: readers retry
	need := p.n - i
	for ; i < p.n; i++ {
		h = step(h, p.keys[i])
		ix, id = t.newChild(ix, i+1, id, h, p.keys[i], p.toks[i])
	}
	t.addSub(ix, id, p.n, v)
	t.count++
	t.gen.Add(1)
	r.count.Add(1)
	r.nodes.Add(int64(need))
	return nil
}

// Remove removes one (tenant, pattern, v), or returns ErrNotFound. It
// validates like Insert. A tenant whose last subscription goes is dropped.
func (r *Router[T]) Remove(tenant, pattern string, v T) error {
	var p path
	th, err := prepare(tenant, pattern, &p)
	if err != nil {
		return err
	}
	for {
		t := r.tenants.lookup(th, tenant)
		if t == nil {
			return ErrNotFound
		}
		t.mu.Lock()
		if t.dead() {
			t.mu.Unlock()
			continue
		}
		err := r.remove(t, &p, v)
		empty := t.count == 0
		t.mu.Unlock()
		if err == nil && empty {
			r.tenants.drop(t, r)
		}
		return err
	}
}

// remove deletes v from the node of p and prunes nodes left empty. Assumes
// t.mu is write-locked.
func (r *Router[T]) remove(t *trie[T], p *path, v T) error {
	ix := t.ix.Load()
	if ix == nil {
		return ErrNotFound
	}
	var ids [MaxTokens + 1]uint32
	h := rootHash
	for i := 0; i < p.n; i++ {
		h = step(h, p.keys[i])
		if ids[i+1], _ = ix.find(i, h, ids[i], p.keys[i], p.toks[i]); ids[i+1] == 0 {
			return ErrNotFound
		}
	}
	c := ids[p.n]
	j := t.findSub(ix, c, v)
	if j < 0 {
		return ErrNotFound
	}
	t.gen.Add(1) // odd: readers retry
	t.delSub(ix, c, p.n, j)
	pruned := 0
	for i := p.n; i > 0 && t.flags(ix, ids[i], i)&(fSubs|fKids|fStar|fFull) == 0; i-- {
		t.delNode(ix, ids[i], ids[i-1], i, p.keys[i-1])
		pruned++
	}
	if pruned > 0 {
		t.shrink(ix, p.n-pruned+1, p.n) // renumbers: ids is stale from here on
	}
	t.count--
	t.gen.Add(1)
	r.count.Add(-1)
	r.nodes.Add(-int64(pruned))
	return nil
}

// Match returns every v whose pattern in tenant matches the literal subject.
//
// The returned slice is shared and read-only: callers must not modify it. It
// stays valid, as an immutable snapshot, while inserts and removes go on. A
// value subscribed with two patterns that both match appears twice (callers
// dedupe). The result is nil when nothing matches.
//
// Match does not validate: the caller checks subject with ValidateSubject. On
// an invalid subject it never panics; an empty token or more than MaxTokens
// tokens match nothing, and other faults match as their bytes say.
//
// Match takes no lock (unless it keeps meeting writers of its tenant) and
// allocates nothing in steady state (see the package doc).
func (r *Router[T]) Match(tenant, subject string) []T {
	if tenant == "" {
		return nil
	}
	th := strhash(tenant, hashSeed)
	key := strhash(subject, th)
	c := r.cache
	if c != nil && len(subject) <= maxCachedSubject {
		if res, ok := c.get(key, tenant, subject); ok {
			return res
		}
	} else {
		c = nil
	}
	t := r.tenants.lookup(th, tenant)
	if t == nil {
		return nil
	}
	var m matcher[T]
	if !m.split(subject) {
		return nil
	}
	gen, ok := m.run(t)
	if !ok {
		return nil // dropped after the lookup: it was empty then
	}
	var res []T
	switch m.n {
	case 0:
	case 1:
		res = sliceOf(m.found[0].p, uint64(m.found[0].n))
	default:
		res = r.combos.result(m.list())
	}
	if c != nil {
		c.put(key, t, gen, subject, res)
	}
	return res
}

// inlineNodes is how many matching nodes a matcher holds without allocating.
const inlineNodes = 8

// A matcher holds one Match's split subject and the subscriber slices it
// found. It lives on Match's stack.
type matcher[T comparable] struct {
	s        string
	ntok     int
	bad      bool // read an inconsistent index
	unshared bool // found an array not marked shared yet
	n        int
	keys     [MaxTokens]uint64
	ends     [MaxTokens]int32    // token i is s[ends[i-1]+1 : ends[i]]
	ids      [inlineNodes]uint32 // matching nodes
	found    [inlineNodes]comboKey[T]
	xids     []uint32      // all matching nodes once more than inlineNodes
	extra    []comboKey[T] // and their subscribers
}

// split splits subject into m.keys. It reports false for an empty token or
// more than MaxTokens tokens, which nothing can match. It finds the dots
// eight bytes at a time.
func (m *matcher[T]) split(s string) bool {
	m.s = s
	n, start, i := 0, 0, 0
	for ; i < len(s); i += 8 {
		var w uint64
		switch {
		case i+8 <= len(s):
			w = load8(s, i)
		case len(s) >= 8: // the last bytes, by a load that overlaps
			w = load8(s, len(s)-8)>>(8*(i+8-len(s))) | ^uint64(0)<<(8*(len(s)-i))
		default:
			for k := len(s) - 1; k >= i; k-- {
				w = w<<8 | uint64(s[k])
			}
			w |= ^uint64(0) << (8 * (len(s) - i)) // no dots past the end
		}
		// Exactly the bytes that are '.' get their top bit set.
		x := w ^ 0x2e2e2e2e2e2e2e2e
		for z := ^((x&^msbs + ^uint64(msbs)) | x | ^uint64(msbs)); z != 0; z &= z - 1 {
			dot := i + bits.TrailingZeros64(z)>>3
			if dot == start || n == MaxTokens-1 {
				return false
			}
			m.keys[n] = tokenKey(s, start, dot)
			m.ends[n] = int32(dot)
			n++
			start = dot + 1
		}
	}
	if start == len(s) {
		return false
	}
	m.keys[n] = tokenKey(s, start, len(s))
	m.ends[n] = int32(len(s))
	m.ntok = n + 1
	return true
}

// tok returns token i.
func (m *matcher[T]) tok(i int) string {
	start := 0
	if i > 0 {
		start = int(m.ends[i-1]) + 1
	}
	return m.s[start:m.ends[i]]
}

// run walks t, without a lock while that succeeds, and returns the
// generation the result belongs to; false if t was dropped.
func (m *matcher[T]) run(t *trie[T]) (uint64, bool) {
	for range 2 {
		gen := t.gen.Load()
		if gen&deadBit != 0 {
			return 0, false
		}
		if gen&1 != 0 {
			break // a writer is busy: wait for it below
		}
		if ix := t.ix.Load(); ix != nil {
			m.walk(ix, 0, t.root.Load(), rootHash, 0)
			m.collect(ix)
		}
		if !m.bad && t.gen.Load() == gen {
			return gen, true
		}
		m.reset()
	}
	return m.runLocked(t)
}

// runLocked walks t under its read lock, which keeps writers out.
func (m *matcher[T]) runLocked(t *trie[T]) (uint64, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	gen := t.gen.Load()
	if gen&deadBit != 0 {
		return 0, false
	}
	if ix := t.ix.Load(); ix != nil {
		m.walk(ix, 0, t.root.Load(), rootHash, 0)
		m.collect(ix)
	}
	return gen, true
}

// reset forgets what a failed walk found.
func (m *matcher[T]) reset() {
	m.n, m.bad, m.unshared = 0, false, false
	m.xids, m.extra = m.xids[:0], m.extra[:0]
}

// walk collects the subscribers of the nodes under node id (flags fl, path
// hash h) that match tokens i and on.
func (m *matcher[T]) walk(ix *index[T], id uint32, fl, h uint64, i int) {
	for ; i < m.ntok; i++ {
		if fl&fFull != 0 && int(id) < len(ix.recs) {
			// The ">" child's id is in the record of its parent.
			m.add(ix, uint32(ix.recs[id].n.Load()>>32&(1<<31-1)))
		}
		if fl&fStar != 0 {
			hs := step(h, starKey)
			if c, cf := ix.find(i, hs, id, starKey, ""); c != 0 {
				if i+1 < m.ntok {
					m.walk(ix, c, cf, hs, i+1)
				} else if cf&fSubs != 0 {
					m.add(ix, c)
				}
			}
		}
		key := m.keys[i]
		if fl&fKids == 0 || key == starKey || key == fullKey {
			return // a "*" or ">" subject token is no literal
		}
		h = step(h, key)
		tok := ""
		if isLong(key) {
			tok = m.tok(i)
		}
		if id, fl = ix.find(i, h, id, key, tok); id == 0 {
			return
		}
	}
	if fl&fSubs != 0 {
		m.add(ix, id)
	}
}

// add records the subscribers of matching node c. It loads them at once,
// so that the load overlaps with the rest of the walk.
func (m *matcher[T]) add(ix *index[T], c uint32) {
	if int(c) >= len(ix.recs) {
		m.bad = true
		return
	}
	r := &ix.recs[c]
	n := r.n.Load()
	k := comboKey[T]{r.p.Load(), int(n & lenMask)}
	if n&sharedBit == 0 {
		m.unshared = true
	}
	if m.n < inlineNodes {
		m.ids[m.n], m.found[m.n] = c, k
	} else {
		if len(m.xids) == 0 {
			m.xids = append(m.xids[:0], m.ids[:]...)
			m.extra = append(m.extra[:0], m.found[:]...)
		}
		m.xids, m.extra = append(m.xids, c), append(m.extra, k)
	}
	m.n++
}

// collect checks what add read and marks the subscriber arrays shared
// (before the walk is validated, see node.go).
func (m *matcher[T]) collect(ix *index[T]) {
	ids := m.ids[:min(m.n, inlineNodes)]
	if m.n > inlineNodes {
		ids = m.xids
	}
	for _, k := range m.list() {
		if k.p == nil || k.n == 0 {
			m.bad = true
			return
		}
	}
	if m.unshared {
		for _, c := range ids {
			if r := &ix.recs[c].n; r.Load()&sharedBit == 0 {
				r.Or(sharedBit)
			}
		}
	}
}

// list returns the subscriber slices found.
func (m *matcher[T]) list() []comboKey[T] {
	if m.n > inlineNodes {
		return m.extra
	}
	return m.found[:m.n]
}

// tenantSet maps tenant names to tries. Readers probe it without locks: it is
// an open-addressing table of atomic trie pointers (linear probing; a dropped
// trie leaves a tombstone) that writers replace wholesale when it fills up.
type tenantSet[T comparable] struct {
	mu   sync.Mutex // serializes writers
	tab  atomic.Pointer[tenantTab[T]]
	tomb *trie[T] // tombstone marker
}

type tenantTab[T comparable] struct {
	slots []atomic.Pointer[trie[T]]
	mask  uint64
	live  int // tries; guarded by tenantSet.mu
	used  int // tries and tombstones; guarded by tenantSet.mu
}

// lookup returns the trie of name (hash h) or nil. Lock-free.
func (s *tenantSet[T]) lookup(h uint64, name string) *trie[T] {
	tab := s.tab.Load()
	if tab == nil {
		return nil
	}
	for i := h & tab.mask; ; i = (i + 1) & tab.mask {
		t := tab.slots[i].Load()
		if t == nil {
			return nil
		}
		if t.hash == h && t != s.tomb && t.name == name {
			return t
		}
	}
}

// create returns the live trie of name, adding an empty one if there is none.
// Takes s.mu.
func (s *tenantSet[T]) create(h uint64, name string, r *Router[T]) *trie[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.lookup(h, name); t != nil {
		return t
	}
	t := &trie[T]{name: name, hash: h}
	tab := s.tab.Load()
	if tab == nil || (tab.used+1)*4 > len(tab.slots)*3 {
		tab = s.rebuild(tab)
	}
	tab.put(t)
	tab.live++
	tab.used++
	r.nodes.Add(1)
	return t
}

// rebuild publishes a copy of tab without tombstones, sized for growth.
// Assumes s.mu is held.
func (s *tenantSet[T]) rebuild(tab *tenantTab[T]) *tenantTab[T] {
	live := 0
	if tab != nil {
		live = tab.live
	}
	n := 8
	for n < 4*(live+1) {
		n <<= 1
	}
	nt := &tenantTab[T]{slots: make([]atomic.Pointer[trie[T]], n), mask: uint64(n - 1)}
	if tab != nil {
		for i := range tab.slots {
			if t := tab.slots[i].Load(); t != nil && t != s.tomb {
				nt.put(t)
			}
		}
	}
	nt.live, nt.used = live, live
	s.tab.Store(nt)
	return nt
}

// put stores t in a free slot. Assumes tenantSet.mu is held.
func (tab *tenantTab[T]) put(t *trie[T]) {
	i := t.hash & tab.mask
	for tab.slots[i].Load() != nil {
		i = (i + 1) & tab.mask
	}
	tab.slots[i].Store(t)
}

// drop removes t from the set if it is still empty. Takes s.mu, then t.mu.
func (s *tenantSet[T]) drop(t *trie[T], r *Router[T]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead() || t.count != 0 {
		return
	}
	t.gen.Store((t.gen.Load() + 2) | deadBit)
	tab := s.tab.Load()
	for i := t.hash & tab.mask; ; i = (i + 1) & tab.mask {
		if tab.slots[i].Load() == t {
			tab.slots[i].Store(s.tomb)
			break
		}
	}
	tab.live--
	r.nodes.Add(-1)
}
