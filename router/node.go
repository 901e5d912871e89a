package router

import (
	"sync/atomic"
	"unsafe"
)

// Subscriber sets larger than indexAbove values get a value -> position map so
// that Remove (and the duplicate check of Insert) is O(1); the map is dropped
// again below indexBelow values. Smaller sets are scanned.
const (
	indexAbove = 32
	indexBelow = 8
)

// A node is one token position of a pattern: the values subscribed with the
// pattern that ends here, and the level below (nil for a leaf).
//
// Every field is guarded by the owning trie's mu (read lock to read, write
// lock to write) except shared, which readers set under the read lock.
//
// Copy-on-write of subs: Match hands out subs[:len:len] without copying and
// sets shared. Once shared, the prefix subs[:len] of that backing array is
// never written again: Insert appends past it (in place while capacity lasts),
// and Remove first copies into a new array, which starts unshared. While no
// reader has seen the array, Remove swaps the last value into the hole in
// place. So a result slice is an immutable snapshot, and removal costs O(1)
// unless a Match happened since the last copy (then one O(n) copy).
//
// A node reached by a literal token of 8 bytes or more is allocated with the
// token's bytes right after it (see newNode), so that comparing the token
// touches only the memory a lookup reads next anyway.
type node[T comparable] struct {
	next   *level[T]
	subs   []T
	idx    map[T]int32 // position index; nil unless len(subs) > indexAbove
	shared atomic.Bool // subs' backing array has been handed out
	toklen uint16      // length of the token stored after the node, or 0
}

// A level holds a node's children, as in nats-server's sublist: literal
// tokens in ents, "*" in pwc, ">" in fwc. Guarded like node.
type level[T comparable] struct {
	// ents is either small (len(ents) == n <= smallKids, scanned) or a hash
	// table (power-of-two length > smallKids, linear probing, load <= 3/4,
	// backward-shift deletion).
	ents []kid[T]
	n    int32
	pwc  *node[T]
	fwc  *node[T]
}

// A kid is one literal child. w identifies the token: a token of up to 7
// bytes is packed into w (little-endian, zero-padded; tokens hold no zero
// bytes, so w is exact and its top byte is 0); a longer token has w =
// strhash(token)|1<<63, and a match is confirmed against the bytes stored
// with the child node.
type kid[T comparable] struct {
	w uint64
	n *node[T]
}

// smallKids is the most children a level scans without hashing.
const smallKids = 4

// longBit marks the w of a token longer than 7 bytes.
const longBit = 1 << 63

// tokenWord returns the kid word of tok, a token of s starting at byte start
// (s may be just tok). For short tokens it loads the bytes in one go when
// s has room around the token.
func tokenWord(s string, start, end int) uint64 {
	n := end - start
	if n >= 8 {
		return strhash(s[start:end], hashSeed) | longBit
	}
	if n == 0 {
		return 0
	}
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

// slotOf is the home slot hash of a kid word.
func slotOf(w uint64) uint64 { return mix(w^hashSeed^wyp0, wyp1) }

// tokNode types hold a node and, right after it, the bytes of a long token.
type tokNode16[T comparable] struct {
	n node[T]
	b [16]byte
}
type tokNode32[T comparable] struct {
	n node[T]
	b [32]byte
}
type tokNode64[T comparable] struct {
	n node[T]
	b [64]byte
}
type tokNode128[T comparable] struct {
	n node[T]
	b [128]byte
}
type tokNode256[T comparable] struct {
	n node[T]
	b [MaxSubjectLen]byte
}

// newNode allocates the node for literal token tok ("" for "*", ">", roots).
func newNode[T comparable](tok string) *node[T] {
	var n *node[T]
	var b []byte
	switch l := len(tok); {
	case l < 8:
		return new(node[T])
	case l <= 16:
		h := new(tokNode16[T])
		n, b = &h.n, h.b[:]
	case l <= 32:
		h := new(tokNode32[T])
		n, b = &h.n, h.b[:]
	case l <= 64:
		h := new(tokNode64[T])
		n, b = &h.n, h.b[:]
	case l <= 128:
		h := new(tokNode128[T])
		n, b = &h.n, h.b[:]
	default:
		h := new(tokNode256[T])
		n, b = &h.n, h.b[:]
	}
	copy(b, tok)
	n.toklen = uint16(len(tok))
	return n
}

// token returns the long token stored after n, or "" if there is none.
func (n *node[T]) token() string {
	if n.toklen == 0 {
		return ""
	}
	// The bytes follow the node inside the same allocation (a tokNode).
	p := unsafe.Add(unsafe.Pointer(n), unsafe.Offsetof(tokNode16[T]{}.b))
	return unsafe.String((*byte)(p), int(n.toklen))
}

// is reports whether kid e is the child for token tok with word w.
func (e *kid[T]) is(w uint64, tok string) bool {
	return e.w == w && (w&longBit == 0 || e.n.token() == tok)
}

// get returns the child for tok (word w). Assumes at least the read lock.
func (l *level[T]) get(tok string, w uint64) *node[T] {
	if len(l.ents) <= smallKids {
		for i := range l.ents {
			if e := &l.ents[i]; e.is(w, tok) {
				return e.n
			}
		}
		return nil
	}
	mask := uint64(len(l.ents) - 1)
	for i := slotOf(w) & mask; ; i = (i + 1) & mask {
		e := &l.ents[i]
		if e.n == nil {
			return nil
		}
		if e.is(w, tok) {
			return e.n
		}
	}
}

// put adds child c for a token (word w) that is not there yet. Assumes the
// write lock is held.
func (l *level[T]) put(w uint64, c *node[T]) {
	l.n++
	if len(l.ents) <= smallKids {
		if int(l.n) <= smallKids {
			l.ents = append(l.ents, kid[T]{w, c})
			return
		}
		l.rehash(2 * smallKids)
	} else if int(l.n)*4 > len(l.ents)*3 {
		l.rehash(2 * len(l.ents))
	}
	l.place(kid[T]{w, c})
}

// place stores e in a free slot of the hash table.
func (l *level[T]) place(e kid[T]) {
	mask := uint64(len(l.ents) - 1)
	i := slotOf(e.w) & mask
	for l.ents[i].n != nil {
		i = (i + 1) & mask
	}
	l.ents[i] = e
}

// rehash rebuilds ents as a hash table of size slots (a power of two).
func (l *level[T]) rehash(size int) {
	old := l.ents
	l.ents = make([]kid[T], size)
	for _, e := range old {
		if e.n != nil {
			l.place(e)
		}
	}
}

// del removes child c, whose token has word w. Assumes the write lock is held.
func (l *level[T]) del(w uint64, c *node[T]) {
	if len(l.ents) <= smallKids {
		for i := range l.ents {
			if l.ents[i].n == c {
				last := len(l.ents) - 1
				l.ents[i] = l.ents[last]
				l.ents[last] = kid[T]{}
				l.ents = l.ents[:last]
				l.n--
				return
			}
		}
		return
	}
	mask := uint64(len(l.ents) - 1)
	i := slotOf(w) & mask
	for l.ents[i].n != c {
		i = (i + 1) & mask
	}
	l.n--
	// Backward-shift deletion: pull later members of the probe run into the hole.
	l.ents[i] = kid[T]{}
	for j := (i + 1) & mask; l.ents[j].n != nil; j = (j + 1) & mask {
		home := slotOf(l.ents[j].w) & mask
		// Move j into the hole unless its home lies cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			l.ents[i] = l.ents[j]
			l.ents[j] = kid[T]{}
			i = j
		}
	}
	if int(l.n) <= smallKids/2 {
		old := l.ents
		l.ents = make([]kid[T], 0, smallKids)
		for _, e := range old {
			if e.n != nil {
				l.ents = append(l.ents, e)
			}
		}
	}
}

// empty reports whether l has no children.
func (l *level[T]) empty() bool { return l.n == 0 && l.pwc == nil && l.fwc == nil }

// empty reports whether n holds nothing and can be pruned.
func (n *node[T]) empty() bool { return len(n.subs) == 0 && n.next == nil }

// snapshot returns the subscriber slice for a result and marks it shared.
// Assumes at least the read lock is held.
func (n *node[T]) snapshot() []T {
	if !n.shared.Load() {
		n.shared.Store(true)
	}
	return n.subs[:len(n.subs):len(n.subs)]
}

// find returns the position of v in subs, or -1.
func (n *node[T]) find(v T) int {
	if n.idx != nil {
		if i, ok := n.idx[v]; ok {
			return int(i)
		}
		return -1
	}
	for i, x := range n.subs {
		if x == v {
			return i
		}
	}
	return -1
}

// add appends v. Assumes the write lock is held.
func (n *node[T]) add(v T) error {
	if n.find(v) >= 0 {
		return ErrExists
	}
	if len(n.subs) == cap(n.subs) {
		// append moves to a new array nobody has seen yet.
		n.subs = append(n.subs, v)
		n.shared.Store(false)
	} else {
		// In place: past the end of every snapshot handed out.
		n.subs = append(n.subs, v)
	}
	switch {
	case n.idx != nil:
		n.idx[v] = int32(len(n.subs) - 1)
	case len(n.subs) > indexAbove:
		n.idx = make(map[T]int32, 2*len(n.subs))
		for i, x := range n.subs {
			n.idx[x] = int32(i)
		}
	}
	return nil
}

// remove deletes v. Assumes the write lock is held.
func (n *node[T]) remove(v T) error {
	i := n.find(v)
	if i < 0 {
		return ErrNotFound
	}
	last := len(n.subs) - 1
	moved := n.subs[last]
	var zero T
	switch {
	case last == 0:
		n.subs = nil
		n.shared.Store(false)
	case n.shared.Load() || (cap(n.subs) > 16 && last < cap(n.subs)/4):
		// Copy: readers may hold the old array, or it is mostly empty.
		ns := make([]T, last, last+1+last/4) // room for a few inserts
		copy(ns, n.subs[:last])
		if i != last {
			ns[i] = moved
		}
		n.subs = ns
		n.shared.Store(false)
	default:
		n.subs[i] = moved
		n.subs[last] = zero // let the value be collected
		n.subs = n.subs[:last]
	}
	if n.idx != nil {
		delete(n.idx, v)
		if i != last {
			n.idx[moved] = int32(i)
		}
		if len(n.subs) < indexBelow {
			n.idx = nil
		}
	}
	return nil
}
