package router

import (
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// Trie index
//
// A tenant's trie is stored flat, in one index (no node objects, no
// pointers between nodes):
//
//   - Every node except the root has a node id (a small integer; the root is
//     id 0) and one 16-byte entry in the hash table of its depth (table
//     below). The entry says which token leads from which parent to the
//     node (key and parent id) and carries the node's flags: whether it has
//     subscribers, literal children, a "*" child, a ">" child. The id of the
//     ">" child is also kept in its parent's record, so matching it needs no
//     lookup.
//   - An entry's slot is chosen by the node's path hash: the hash of the
//     tokens from the root down to it (step below), not by its parent's id.
//     So the slots a Match probes depend on the subject alone, and the CPU
//     can fetch the entries of several levels at once instead of one cache
//     miss after another; the parent id in the entry makes the lookup exact.
//   - A short token (up to 7 bytes) is its own key: its bytes and length in
//     one word. A longer token's key is a hash and its length; it is
//     confirmed against the token's bytes (toks, by node id).
//   - The subscribers of node id are recs[id] (a pointer to the first value
//     and a length): the slice Match hands out. The writers' side of a node
//     (the capacity of that slice, the path hash, the number of literal
//     children) is in trie.w, which readers never touch.
//
// Readers take no lock: the trie's generation is a sequence lock. Writers
// (holding trie.mu) make it odd before they change the index and even again
// after; every word a reader loads is atomic, and a reader keeps what it
// read only if the generation was even and did not change meanwhile; else
// it retries once, and then (or at once if a writer is busy) walks under the
// read lock, which excludes writers. Tables and record arrays are replaced,
// not resized in place, when they grow or shrink, so a reader holding an old
// one reads consistent (if stale, hence discarded) memory; node ids are
// bounds-checked because a reader may pair an entry with an older, shorter
// recs array, and a probe never runs longer than its table.
//
// Copy-on-write of subscribers: Match hands out recs[id] as a slice without
// copying, after setting the record's shared bit. Once shared, the prefix
// [0, len) of that backing array is never written again: Insert appends past
// it (in place while capacity lasts), and Remove first copies into a new
// array, which starts unshared. While no reader has seen the array, Remove
// swaps the last value into the hole in place. So a result slice is an
// immutable snapshot, and removal costs O(1) unless a Match happened since
// the last copy (then one O(n) copy).

// Subscriber sets larger than indexAbove values get a value -> position map so
// that Remove (and the duplicate check of Insert) is O(1); the map is dropped
// again below indexBelow values. Smaller sets are scanned.
const (
	indexAbove = 32
	indexBelow = 8
)

// Keys and flags. Bits 0-55 of a short token's key are its bytes
// (little-endian) and bits 56-58 its length (1-7); a long token has 0 there,
// its length (capped at 511) in bits 47-55 and a hash in bits 0-46. Bits
// 59-62 of an entry's key word are the flags of the node it leads to.
const (
	lenShift  = 56
	longShift = 47
	keyMask   = 1<<59 - 1
	fStar     = 1 << 59 // has a "*" child
	fFull     = 1 << 60 // has a ">" child
	fSubs     = 1 << 61 // has subscribers
	fKids     = 1 << 62 // has literal children
	starKey   = '*' | 1<<lenShift
	fullKey   = '>' | 1<<lenShift
)

// sharedBit in rec.n marks an array handed out by Match.
const sharedBit = 1 << 63

// rootHash is the path hash of every root.
var rootHash = mix(hashSeed, wyp0)

// step returns the path hash of the child with key under a node with path
// hash h.
func step(h, key uint64) uint64 { return mix(h^key, wyp1) }

// isLong reports whether key is a long token's.
func isLong(key uint64) bool { return key>>lenShift&7 == 0 }

// tokenKey returns the key of the token s[start:end] (non-empty).
func tokenKey(s string, start, end int) uint64 {
	n := end - start
	if n >= 8 {
		return strhash(s[start:end], hashSeed)&(1<<longShift-1) | uint64(min(n, 511))<<longShift
	}
	return tokenWord(s, start, end) | uint64(n)<<lenShift
}

// tokenWord returns the bytes of the token s[start:end] (1-7 bytes) as a
// little-endian word. It loads them in one go when s has room around the
// token.
func tokenWord(s string, start, end int) uint64 {
	n := end - start
	mask := uint64(1)<<(8*n) - 1
	switch {
	case start+8 <= len(s):
		return load8(s, start) & mask
	case len(s) >= 8:
		return load8(s, len(s)-8) >> (8 * (start + 8 - len(s))) & mask
	}
	var w uint64
	for i := end - 1; i >= start; i-- {
		w = w<<8 | uint64(s[i])
	}
	return w
}

// An ent is one node's entry: k is the key of the token leading to it and
// its flags; ids is parent | child<<32.
type ent struct {
	k   atomic.Uint64
	ids atomic.Uint64
}

// A rec is what readers see of a node's subscribers: p is subs[0], n is
// len(subs) (bits 0-31) | the id of the node's ">" child, if any (bits
// 32-62) | sharedBit once the array was handed out.
type rec[T comparable] struct {
	p atomic.Pointer[T]
	n atomic.Uint64
}

const (
	lenMask  = 1<<32 - 1
	fullMask = 1<<63 - 1<<32
)

// A wrec is the writers' side of a node (trie.w, by node id): with its
// record, whose pointer and length it completes with the capacity, it makes
// the node's subscriber slice. Guarded by trie.mu.
type wrec struct {
	phash uint64 // path hash
	cap   uint32 // of the subscriber array
	kids  uint32 // literal children
}

// groupSize is the number of slots that share a word of tags.
const groupSize = 8

// Tag bytes: an empty slot is 0, a deleted one 1, a used one 0x80 | seven
// bits of its path hash.
const (
	tagDeleted = 1
	lsbs       = 0x0101010101010101
	msbs       = 0x8080808080808080
)

// A table holds the entries of the nodes at one depth. It is made of groups
// of eight slots (as in Swiss tables): a word of eight tag bytes and eight
// entries. A lookup compares the tags of a group at once and reads an entry
// only when its tag matches, so a lookup for a token that is not there, the
// common case in a miss, reads one tag word and no entry; the tags (a byte
// per slot) are dense enough to stay in the CPU caches. A group with an
// empty slot ends a probe sequence; a deleted slot in a full group becomes a
// tombstone, dropped when the table is rebuilt.
//
// One table per depth keeps the nodes near the root, which nearly every
// Match reads, packed together instead of spread over the cache lines of a
// large table among nodes that are rarely read.
type table struct {
	ng   uint64          // groups; 0 for no table
	tags []atomic.Uint64 // a word of tags per group
	ents []ent           // groupSize entries per group
}

// An index is one version of a trie's tables. The slice headers are
// immutable; the elements are atomic and change under the write lock.
type index[T comparable] struct {
	tabs [MaxTokens]table         // by depth-1
	recs []rec[T]                 // by node id
	toks []atomic.Pointer[string] // long tokens by node id; nil until one exists
}

// newTable returns a table with room for about n entries.
func newTable(n int) table {
	ng := max(1, int(float64(n)/minLoad+0.5))
	return table{ng: uint64(ng), tags: make([]atomic.Uint64, ng), ents: make([]ent, ng*groupSize)}
}

// maxLoad is the most slots (used or tombstones) per group; a rebuild
// leaves minLoad.
const (
	maxLoad = 7
	minLoad = 4.5
)

// home returns the first group to probe for path hash h (the high half of
// h scaled to the table, so that any size works).
func (tb *table) home(h uint64) uint64 { return (h >> 32) * tb.ng >> 32 }

// tagOf returns the tag of path hash h, from bits home does not use.
func tagOf(h uint64) uint64 { return h&0x7f | 0x80 }

// zeroBytes returns a word with the top bit set in (at least) the lowest
// zero byte of x, and in no byte below it; 0 if x has no zero byte.
func zeroBytes(x uint64) uint64 { return (x - lsbs) &^ x & msbs }

// find returns the child of parent at depth d+1 with key (token tok, needed
// only for long keys) whose path hash is h, and its key word; 0 if there is
// none. Readers may call it without a lock (see above).
func (ix *index[T]) find(d int, h uint64, parent uint32, key uint64, tok string) (uint32, uint64) {
	tb := &ix.tabs[d]
	g, tag := tb.home(h), tagOf(h)*lsbs
	for range tb.ng {
		w := tb.tags[g].Load()
		for m := zeroBytes(w ^ tag); m != 0; m &= m - 1 {
			e := &tb.ents[g*groupSize+uint64(bits.TrailingZeros64(m)>>3)]
			if ids := e.ids.Load(); uint32(ids) == parent {
				if k := e.k.Load(); k&keyMask == key && (!isLong(key) || ix.tokIs(uint32(ids>>32), tok)) {
					return uint32(ids >> 32), k
				}
			}
		}
		if zeroBytes(w) != 0 {
			return 0, 0 // an empty slot: the probe sequence ends here
		}
		if g++; g == tb.ng {
			g = 0
		}
	}
	return 0, 0
}

// tokIs reports whether node c's long token is tok.
func (ix *index[T]) tokIs(c uint32, tok string) bool {
	if int(c) >= len(ix.toks) {
		return false
	}
	p := ix.toks[c].Load()
	return p != nil && *p == tok
}

// slotOf returns the slot of node c (path hash h). Assumes the write lock.
func (tb *table) slotOf(h uint64, c uint32) uint64 {
	for g, n := tb.home(h), uint64(0); ; n++ {
		if n == tb.ng {
			panic("router: node missing from its table")
		}
		for j := g * groupSize; j < (g+1)*groupSize; j++ {
			if uint32(tb.ents[j].ids.Load()>>32) == c && tb.tags[g].Load()>>(j%groupSize*8)&0x80 != 0 {
				return j
			}
		}
		if g++; g == tb.ng {
			g = 0
		}
	}
}

// setTag sets the tag of slot i. Assumes the write lock.
func (tb *table) setTag(i, tag uint64) {
	w := &tb.tags[i/groupSize]
	sh := i % groupSize * 8
	w.Store(w.Load()&^(0xff<<sh) | tag<<sh)
}

// place stores an entry in the first free slot from h and reports whether
// it took a tombstone's place. Assumes the write lock and a free slot.
func (tb *table) place(h, k, ids uint64) bool {
	g := tb.home(h)
	for {
		w := tb.tags[g].Load()
		if free := ^w & msbs; free != 0 {
			j := uint64(bits.TrailingZeros64(free) >> 3)
			i := g*groupSize + j
			tb.ents[i].k.Store(k)
			tb.ents[i].ids.Store(ids)
			tb.setTag(i, tagOf(h))
			return w>>(j*8)&0xff == tagDeleted
		}
		if g++; g == tb.ng {
			g = 0
		}
	}
}

// each calls f with the slot of every used entry.
func (tb *table) each(f func(i uint64)) {
	for g := range tb.ng {
		w := tb.tags[g].Load()
		for m := w & msbs; m != 0; m &= m - 1 {
			f(g*groupSize + uint64(bits.TrailingZeros64(m)>>3))
		}
	}
}

// Writers' operations on a trie. All assume t.mu is write-locked; the ones
// that change the index also assume the generation is odd. A node's depth
// is the number of tokens from the root to it; the root's is 0.

// ent returns the entry of node c at depth d > 0.
func (t *trie[T]) ent(ix *index[T], c uint32, d int) *ent {
	tb := &ix.tabs[d-1]
	return &tb.ents[tb.slotOf(t.w[c].phash, c)]
}

// flags returns node c's flags and key word (the root has only flags).
func (t *trie[T]) flags(ix *index[T], c uint32, d int) uint64 {
	if d == 0 {
		return t.root.Load()
	}
	return t.ent(ix, c, d).k.Load()
}

// setFlags sets and clears flag bits of node c at depth d.
func (t *trie[T]) setFlags(ix *index[T], c uint32, d int, set, clear uint64) {
	e := &t.root
	if d > 0 {
		e = &t.ent(ix, c, d).k
	}
	e.Store(e.Load()&^clear | set)
}

// setFull records f as the ">" child of node p.
func setFull[T comparable](ix *index[T], p, f uint32) {
	r := &ix.recs[p].n
	r.Store(r.Load()&^fullMask | uint64(f)<<32)
}

// publish makes ix current. Tables and records are replaced, never resized
// in place: a reader holding an old index reads consistent, if stale (and
// then discarded), memory.
func (t *trie[T]) publish(ix *index[T]) *index[T] {
	t.ix.Store(ix)
	return ix
}

// retable returns ix with the table of depth d rebuilt for n entries.
func (t *trie[T]) retable(ix *index[T], d, n int) *index[T] {
	nx := *ix
	old := &ix.tabs[d-1]
	tb := newTable(n)
	old.each(func(i uint64) {
		e := &old.ents[i]
		ids := e.ids.Load()
		tb.place(t.w[ids>>32].phash, e.k.Load(), ids)
	})
	nx.tabs[d-1] = tb
	t.tombs[d-1] = 0
	return t.publish(&nx)
}

// grow returns ix with room for a new node at depth d.
func (t *trie[T]) grow(ix *index[T], d int) *index[T] {
	if ix == nil {
		ix = t.publish(&index[T]{recs: make([]rec[T], 8)})
		t.w, t.next = make([]wrec, 8), 1 // id 0 is the root
	}
	if tb := &ix.tabs[d-1]; t.used[d-1]+t.tombs[d-1]+1 > int(tb.ng)*maxLoad {
		ix = t.retable(ix, d, t.used[d-1]+1)
	}
	if len(t.free) == 0 && int(t.next) == len(ix.recs) {
		n := 2 * len(ix.recs)
		nx := *ix
		nx.recs = make([]rec[T], n)
		for i := range ix.recs {
			nx.recs[i].p.Store(ix.recs[i].p.Load())
			nx.recs[i].n.Store(ix.recs[i].n.Load())
		}
		if ix.toks != nil {
			nx.toks = make([]atomic.Pointer[string], n)
			for i := range ix.toks {
				nx.toks[i].Store(ix.toks[i].Load())
			}
		}
		t.w = append(t.w, make([]wrec, n-len(t.w))...)
		ix = t.publish(&nx)
	}
	return ix
}

// shrink drops excess room from the tables of depths lo to hi, and
// renumbers the nodes densely if few ids are used.
func (t *trie[T]) shrink(ix *index[T], lo, hi int) {
	// Wide margins (load 1/8, an eighth of the ids), so that a trie that
	// shrinks and grows back does not keep rebuilding.
	for d := lo; d <= hi; d++ {
		if tb := &ix.tabs[d-1]; tb.ng > 1 && (t.used[d-1] < int(tb.ng) || t.tombs[d-1] > t.used[d-1]) {
			ix = t.retable(ix, d, t.used[d-1])
		}
	}
	if len(ix.recs) > 64 && 8*(t.nodes+1) < len(ix.recs) {
		t.renumber(ix)
	}
}

// renumber returns a copy of ix with node ids 1..t.nodes, tables rebuilt.
func (t *trie[T]) renumber(ix *index[T]) *index[T] {
	n := max(8, t.nodes+1+t.nodes/2)
	nx := &index[T]{recs: make([]rec[T], n)}
	if ix.toks != nil {
		nx.toks = make([]atomic.Pointer[string], n)
	}
	w := make([]wrec, n)
	w[0] = t.w[0]
	remap := make([]uint32, len(ix.recs))
	next := uint32(1)
	for d := range ix.tabs {
		ix.tabs[d].each(func(i uint64) {
			c := uint32(ix.tabs[d].ents[i].ids.Load() >> 32)
			remap[c] = next
			w[next] = t.w[c]
			next++
		})
	}
	copyRec := func(c, o uint32) {
		r := ix.recs[o].n.Load()
		if f := uint32(r >> 32 & (1<<31 - 1)); f != 0 {
			r = r&^fullMask | uint64(remap[f])<<32
		}
		nx.recs[c].p.Store(ix.recs[o].p.Load())
		nx.recs[c].n.Store(r)
		if ix.toks != nil {
			nx.toks[c].Store(ix.toks[o].Load())
		}
	}
	copyRec(0, 0)
	for d := range ix.tabs {
		old := &ix.tabs[d]
		if old.ng == 0 {
			continue
		}
		tb := newTable(t.used[d])
		old.each(func(i uint64) {
			e := &old.ents[i]
			ids := e.ids.Load()
			c, p := remap[ids>>32], remap[uint32(ids)]
			tb.place(w[c].phash, e.k.Load(), uint64(p)|uint64(c)<<32)
			copyRec(c, uint32(ids>>32))
		})
		nx.tabs[d] = tb
		t.tombs[d] = 0
	}
	if t.idx != nil {
		idx := make(map[uint32]map[T]int32, len(t.idx))
		for c, m := range t.idx {
			idx[remap[c]] = m
		}
		t.idx = idx
	}
	t.w, t.free, t.next = w, t.free[:0], next
	return t.publish(nx)
}

// newChild adds a node at depth d under parent p (path hash of the new node
// h) for token tok with key.
func (t *trie[T]) newChild(ix *index[T], d int, p uint32, h, key uint64, tok string) (*index[T], uint32) {
	ix = t.grow(ix, d)
	var c uint32
	if n := len(t.free); n > 0 {
		c = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		c = t.next
		t.next++
	}
	t.w[c] = wrec{phash: h}
	if isLong(key) {
		if ix.toks == nil {
			nx := *ix
			nx.toks = make([]atomic.Pointer[string], len(ix.recs))
			ix = t.publish(&nx)
		}
		s := string([]byte(tok)) // not pinning the caller's pattern
		ix.toks[c].Store(&s)
	}
	if ix.tabs[d-1].place(h, key, uint64(p)|uint64(c)<<32) {
		t.tombs[d-1]--
	}
	t.used[d-1]++
	switch key {
	case starKey:
		t.setFlags(ix, p, d-1, fStar, 0)
	case fullKey:
		setFull(ix, p, c)
		t.setFlags(ix, p, d-1, fFull, 0)
	default:
		if t.w[p].kids++; t.w[p].kids == 1 {
			t.setFlags(ix, p, d-1, fKids, 0)
		}
	}
	t.nodes++
	return ix, c
}

// delNode removes node c at depth d (no subscribers, no children) whose key
// is key and parent p.
func (t *trie[T]) delNode(ix *index[T], c, p uint32, d int, key uint64) {
	w := &t.w[c]
	tb := &ix.tabs[d-1]
	i := tb.slotOf(w.phash, c)
	// If the group has an empty slot, no probe sequence goes past it, and
	// the slot can be empty too; otherwise it becomes a tombstone.
	tag := uint64(tagDeleted)
	if zeroBytes(tb.tags[i/groupSize].Load()) != 0 {
		tag = 0
	} else {
		t.tombs[d-1]++
	}
	tb.setTag(i, tag)
	tb.ents[i].ids.Store(0)
	tb.ents[i].k.Store(0)
	ix.recs[c].p.Store(nil)
	ix.recs[c].n.Store(0)
	if ix.toks != nil {
		ix.toks[c].Store(nil)
	}
	*w = wrec{}
	t.free = append(t.free, c)
	t.nodes--
	t.used[d-1]--
	switch key {
	case starKey:
		t.setFlags(ix, p, d-1, 0, fStar)
	case fullKey:
		setFull(ix, p, 0)
		t.setFlags(ix, p, d-1, 0, fFull)
	default:
		if t.w[p].kids--; t.w[p].kids == 0 {
			t.setFlags(ix, p, d-1, 0, fKids)
		}
	}
}

// subsOf returns node c's subscribers.
func (t *trie[T]) subsOf(ix *index[T], c uint32) []T {
	r := &ix.recs[c]
	p := r.p.Load()
	if p == nil {
		return nil
	}
	return unsafe.Slice(p, t.w[c].cap)[:r.n.Load()&lenMask]
}

// findSub returns the position of v among node c's subscribers, or -1.
func (t *trie[T]) findSub(ix *index[T], c uint32, v T) int {
	if m := t.idx[c]; m != nil {
		if i, ok := m[v]; ok {
			return int(i)
		}
		return -1
	}
	for i, x := range t.subsOf(ix, c) {
		if x == v {
			return i
		}
	}
	return -1
}

// setSubs makes subs node c's subscribers, for readers too; shared is the
// record's shared bit to keep.
func (t *trie[T]) setSubs(ix *index[T], c uint32, subs []T, shared uint64) {
	r := &ix.recs[c]
	full := r.n.Load() & fullMask
	t.w[c].cap = uint32(cap(subs))
	if len(subs) == 0 {
		t.w[c].cap = 0
		r.p.Store(nil)
		r.n.Store(full)
		return
	}
	r.p.Store(&subs[0])
	r.n.Store(uint64(len(subs)) | full | shared)
}

// addSub appends v (not present) to the subscribers of node c at depth d.
func (t *trie[T]) addSub(ix *index[T], c uint32, d int, v T) {
	subs := t.subsOf(ix, c)
	shared := ix.recs[c].n.Load() & sharedBit
	if len(subs) == cap(subs) {
		shared = 0 // append moves to a new array nobody has seen yet
	} // else in place: past the end of every snapshot handed out
	subs = append(subs, v)
	t.setSubs(ix, c, subs, shared)
	if len(subs) == 1 {
		t.setFlags(ix, c, d, fSubs, 0)
	}
	m := t.idx[c]
	switch {
	case m != nil:
		m[v] = int32(len(subs) - 1)
	case len(subs) > indexAbove:
		m = make(map[T]int32, 2*len(subs))
		for i, x := range subs {
			m[x] = int32(i)
		}
		if t.idx == nil {
			t.idx = map[uint32]map[T]int32{}
		}
		t.idx[c] = m
	}
}

// delSub removes the value at position i of the subscribers of node c at
// depth d.
func (t *trie[T]) delSub(ix *index[T], c uint32, d, i int) {
	subs := t.subsOf(ix, c)
	v := subs[i]
	last := len(subs) - 1
	moved := subs[last]
	shared := ix.recs[c].n.Load() & sharedBit
	var zero T
	switch {
	case last == 0:
		subs = nil
	case shared != 0 || (cap(subs) > 16 && last < cap(subs)/4):
		// Copy: readers may hold the old array, or it is mostly empty.
		ns := make([]T, last, last+1+last/4) // room for a few inserts
		copy(ns, subs[:last])
		if i != last {
			ns[i] = moved
		}
		subs = ns
		shared = 0
	default:
		subs[i] = moved
		subs[last] = zero // let the value be collected
		subs = subs[:last]
	}
	t.setSubs(ix, c, subs, shared)
	if len(subs) == 0 {
		t.setFlags(ix, c, d, 0, fSubs)
	}
	if m := t.idx[c]; m != nil {
		delete(m, v)
		if i != last {
			m[moved] = int32(i)
		}
		if len(subs) < indexBelow {
			delete(t.idx, c)
		}
	}
}

// sliceOf returns the result slice for a record's pointer and length word.
func sliceOf[T any](p *T, n uint64) []T {
	return unsafe.Slice(p, int(n&lenMask))
}
