// Package router decides which subscribers receive a message: a set of
// subject tries, one per tenant, matched with NATS subject semantics.
//
// Subjects are dot-separated tokens ("orders.eu.created"). A subscription
// pattern may use "*" for exactly one token and, as its last token, ">" for
// one or more tokens. Each tenant has its own trie, so no pattern can match
// another tenant's subjects.
//
// The design follows nats-server's sublist: each trie level has literal
// children plus dedicated "*" and ">" children, and a bounded result cache is
// invalidated by a per-tenant generation counter. On top of that:
//
//   - Match allocates nothing in steady state. A cache hit takes no lock and
//     writes no shared memory (cache.go). A miss splits the subject into a
//     stack array, walks the trie under the tenant's read lock, and returns
//     a node's subscriber slice itself (copy-on-write, so it stays an
//     immutable snapshot) or, when several nodes match, a concatenation kept
//     in a combo cache keyed by the slices it was built from.
//   - A level keeps up to four literal children in a scanned array and more
//     in an open-addressing table of 16-byte entries; a token of up to seven
//     bytes is compared as one word, a longer one against bytes stored in the
//     same allocation as its node (node.go), so a lookup touches little
//     memory.
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
// Locks: each tenant trie has a sync.RWMutex (trie.mu). The tenant table has a
// mutex for writers (tenantSet.mu); readers use it without locks. Lock order:
// tenantSet.mu, then trie.mu. The caches are lock-free.
package router

import (
	"sync"
	"sync/atomic"
)

// Config configures a Router. Zero fields mean defaults.
type Config struct {
	// CacheSize is the number of match results the Router caches, shared by
	// all tenants (rounded up to a power of two). Each entry takes about 230
	// bytes with its share of the combo and admission tables: the default
	// takes about 0.9 MiB, allocated by New. Zero means DefaultCacheSize; a
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

// A trie holds one tenant's subscriptions.
type trie[T comparable] struct {
	// Read by lock-free cache hits: immutable, or atomic.
	name string
	hash uint64
	gen  atomic.Uint64 // bumped (write lock held) after every change
	_    [64 - 32]byte // keep readers' line apart from mu

	mu    sync.RWMutex // guards root and count
	root  node[T]
	count int
}

// dead reports whether t was dropped. Assumes t.mu is held.
func (t *trie[T]) dead() bool { return t.gen.Load()&deadBit != 0 }

// Count returns the number of subscriptions.
func (r *Router[T]) Count() int { return int(r.count.Load()) }

// NodeCount returns the number of trie nodes held, each tenant's root
// included; it is 0 when the Router is empty.
func (r *Router[T]) NodeCount() int { return int(r.nodes.Load()) }

// Insert adds v under pattern in tenant. It validates pattern (see
// ValidatePattern) and tenant (non-empty). Inserting a (tenant, pattern, v)
// that is already there returns ErrExists and changes nothing.
func (r *Router[T]) Insert(tenant, pattern string, v T) error {
	if tenant == "" {
		return ErrEmptyTenant
	}
	if err := ValidatePattern(pattern); err != nil {
		return err
	}
	var buf [MaxTokens]string
	toks := splitPattern(pattern, buf[:0])
	th := strhash(tenant, hashSeed)
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
		err := r.insert(t, toks, v)
		t.mu.Unlock()
		return err
	}
}

// insert adds v at the node of toks. Assumes t.mu is write-locked.
func (r *Router[T]) insert(t *trie[T], toks []string, v T) error {
	n := &t.root
	created := 0
	for _, tok := range toks {
		l := n.next
		if l == nil {
			l = new(level[T])
			n.next = l
		}
		var c *node[T]
		switch tok {
		case "*":
			if l.pwc == nil {
				l.pwc = newNode[T]("")
				created++
			}
			c = l.pwc
		case ">":
			if l.fwc == nil {
				l.fwc = newNode[T]("")
				created++
			}
			c = l.fwc
		default:
			w := tokenWord(tok, 0, len(tok))
			if c = l.get(tok, w); c == nil {
				c = newNode[T](tok)
				l.put(w, c)
				created++
			}
		}
		n = c
	}
	if err := n.add(v); err != nil {
		return err // ErrExists: the path existed, nothing was created
	}
	t.count++
	r.count.Add(1)
	r.nodes.Add(int64(created))
	t.gen.Add(1)
	return nil
}

// Remove removes one (tenant, pattern, v), or returns ErrNotFound. It
// validates like Insert. A tenant whose last subscription goes is dropped.
func (r *Router[T]) Remove(tenant, pattern string, v T) error {
	if tenant == "" {
		return ErrEmptyTenant
	}
	if err := ValidatePattern(pattern); err != nil {
		return err
	}
	var buf [MaxTokens]string
	toks := splitPattern(pattern, buf[:0])
	th := strhash(tenant, hashSeed)
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
		err := r.remove(t, toks, v)
		empty := t.count == 0
		t.mu.Unlock()
		if err == nil && empty {
			r.tenants.drop(t, r)
		}
		return err
	}
}

// remove deletes v from the node of toks and prunes nodes left empty.
// Assumes t.mu is write-locked.
func (r *Router[T]) remove(t *trie[T], toks []string, v T) error {
	var (
		path [MaxTokens + 1]*node[T]
		ws   [MaxTokens]uint64
	)
	path[0] = &t.root
	n := &t.root
	for i, tok := range toks {
		l := n.next
		if l == nil {
			return ErrNotFound
		}
		switch tok {
		case "*":
			n = l.pwc
		case ">":
			n = l.fwc
		default:
			ws[i] = tokenWord(tok, 0, len(tok))
			n = l.get(tok, ws[i])
		}
		if n == nil {
			return ErrNotFound
		}
		path[i+1] = n
	}
	if err := n.remove(v); err != nil {
		return err
	}
	pruned := 0
	for i := len(toks); i > 0 && path[i].empty(); i-- {
		p := path[i-1]
		l := p.next
		switch toks[i-1] {
		case "*":
			l.pwc = nil
		case ">":
			l.fwc = nil
		default:
			l.del(ws[i-1], path[i])
		}
		if l.empty() {
			p.next = nil
		}
		pruned++
	}
	t.count--
	r.count.Add(-1)
	r.nodes.Add(-int64(pruned))
	t.gen.Add(1)
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
// Match takes no lock on a cache hit, the tenant's read lock otherwise, and
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
	t.mu.RLock()
	gen := t.gen.Load()
	if gen&deadBit != 0 {
		// Dropped after the lookup: it was empty then, so nil is right.
		t.mu.RUnlock()
		return nil
	}
	m.walk(&t.root, 0)
	var res []T
	switch m.n {
	case 0:
	case 1:
		res = m.nodes[0].snapshot()
	default:
		res = r.combos.result(m.list())
	}
	t.mu.RUnlock()
	if c != nil {
		c.put(key, t, gen, subject, res)
	}
	return res
}

// inlineNodes is how many matching nodes a matcher holds without allocating.
const inlineNodes = 16

// A matcher holds one Match's split subject and the nodes it matched. It
// lives on Match's stack.
type matcher[T comparable] struct {
	toks  [MaxTokens]string
	ws    [MaxTokens]uint64 // kid words of toks
	ntok  int
	n     int
	nodes [inlineNodes]*node[T]
	extra []*node[T] // all matched nodes once more than inlineNodes
}

// split splits subject into m.toks. It reports false for an empty token or
// more than MaxTokens tokens, which nothing can match.
func (m *matcher[T]) split(s string) bool {
	n, start := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			if i == start || n == MaxTokens-1 {
				return false
			}
			m.toks[n] = s[start:i]
			m.ws[n] = tokenWord(s, start, i)
			n++
			start = i + 1
		}
	}
	if start == len(s) {
		return false
	}
	m.toks[n] = s[start:]
	m.ws[n] = tokenWord(s, start, len(s))
	m.ntok = n + 1
	return true
}

// walk collects the nodes under n that match tokens i and on. Assumes the
// trie's read lock is held.
func (m *matcher[T]) walk(n *node[T], i int) {
	for ; i < m.ntok; i++ {
		l := n.next
		if l == nil {
			return
		}
		if f := l.fwc; f != nil {
			m.add(f)
		}
		if p := l.pwc; p != nil {
			if i+1 == m.ntok {
				m.add(p)
			} else {
				m.walk(p, i+1)
			}
		}
		if n = l.get(m.toks[i], m.ws[i]); n == nil {
			return
		}
	}
	m.add(n)
}

// add records n if it has subscribers.
func (m *matcher[T]) add(n *node[T]) {
	if len(n.subs) == 0 {
		return
	}
	if m.n < inlineNodes {
		m.nodes[m.n] = n
	} else {
		if m.extra == nil {
			m.extra = append(make([]*node[T], 0, 2*inlineNodes), m.nodes[:]...)
		}
		m.extra = append(m.extra, n)
	}
	m.n++
}

// list returns the matched nodes.
func (m *matcher[T]) list() []*node[T] {
	if m.extra != nil {
		return m.extra
	}
	return m.nodes[:m.n]
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
	t.gen.Store((t.gen.Load() + 1) | deadBit)
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
