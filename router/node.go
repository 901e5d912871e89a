package router

import (
	"strings"
	"sync/atomic"
)

// Subscriber sets larger than indexAbove values get a value -> position map so
// that Remove (and the duplicate check of Insert) is O(1); the map is dropped
// again below indexBelow values. Smaller sets are scanned.
const (
	indexAbove = 32
	indexBelow = 8
)

// A node is one token position of a pattern. Its literal children sit in kids,
// the "*" and ">" children in pwc and fwc (as in nats-server's sublist), and
// the values subscribed with the pattern that ends here in subs.
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
type node[T comparable] struct {
	kids   *kidTable[T]
	pwc    *node[T]
	fwc    *node[T]
	subs   []T
	idx    map[T]int32 // nil unless len(subs) > indexAbove
	shared atomic.Bool // subs' backing array has been handed out
}

// empty reports whether n holds nothing and can be pruned.
func (n *node[T]) empty() bool {
	return len(n.subs) == 0 && n.pwc == nil && n.fwc == nil && (n.kids == nil || n.kids.n == 0)
}

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

// kid is one literal child in a kidTable.
type kid[T comparable] struct {
	key string
	h   uint64 // strhash(key, hashSeed)
	n   *node[T]
}

// smallKids is the most children a kidTable keeps in a plain array that is
// scanned without hashing; beyond it the table is an open-addressing hash
// table (linear probing, backward-shift deletion, load <= 3/4).
const smallKids = 4

// A kidTable maps literal tokens to child nodes. Guarded like node.
type kidTable[T comparable] struct {
	ents   []kid[T] // small: the n children; hashed: power-of-two slots
	n      int32
	hashed bool
}

// get returns the child for key, hashing lazily through h only when the
// table is a hash table. Assumes at least the read lock is held.
func (t *kidTable[T]) get(key string, h uint64) *node[T] {
	mask := uint64(len(t.ents) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		e := &t.ents[i]
		if e.n == nil {
			return nil
		}
		if e.h == h && e.key == key {
			return e.n
		}
	}
}

// lookup returns the child for key (hashing it if needed). Used by writers.
func (t *kidTable[T]) lookup(key string) *node[T] {
	if !t.hashed {
		for i := range t.ents {
			if t.ents[i].key == key {
				return t.ents[i].n
			}
		}
		return nil
	}
	return t.get(key, strhash(key, hashSeed))
}

// put adds a child that is not there yet. Assumes the write lock is held.
func (t *kidTable[T]) put(key string, c *node[T]) {
	key = strings.Clone(key) // never retain the caller's string
	e := kid[T]{key: key, h: strhash(key, hashSeed), n: c}
	t.n++
	if !t.hashed {
		if int(t.n) <= smallKids {
			t.ents = append(t.ents, e)
			return
		}
		t.rehash(2 * smallKids)
	} else if int(t.n)*4 > len(t.ents)*3 {
		t.rehash(2 * len(t.ents))
	}
	t.place(e)
}

// place stores e in a free slot of a hash table.
func (t *kidTable[T]) place(e kid[T]) {
	mask := uint64(len(t.ents) - 1)
	i := e.h & mask
	for t.ents[i].n != nil {
		i = (i + 1) & mask
	}
	t.ents[i] = e
}

// rehash rebuilds the table as a hash table of size slots (a power of two).
func (t *kidTable[T]) rehash(size int) {
	old := t.ents
	t.ents = make([]kid[T], size)
	t.hashed = true
	for _, e := range old {
		if e.n != nil {
			t.place(e)
		}
	}
}

// del removes the child for key. Assumes the write lock is held.
func (t *kidTable[T]) del(key string) {
	if !t.hashed {
		for i := range t.ents {
			if t.ents[i].key == key {
				last := len(t.ents) - 1
				t.ents[i] = t.ents[last]
				t.ents[last] = kid[T]{}
				t.ents = t.ents[:last]
				t.n--
				return
			}
		}
		return
	}
	h := strhash(key, hashSeed)
	mask := uint64(len(t.ents) - 1)
	i := h & mask
	for {
		e := &t.ents[i]
		if e.n == nil {
			return
		}
		if e.h == h && e.key == key {
			break
		}
		i = (i + 1) & mask
	}
	t.n--
	// Backward-shift deletion: pull later members of the probe run into the hole.
	t.ents[i] = kid[T]{}
	for j := (i + 1) & mask; t.ents[j].n != nil; j = (j + 1) & mask {
		home := t.ents[j].h & mask
		// Move j into the hole i unless its home lies cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.ents[i] = t.ents[j]
			t.ents[j] = kid[T]{}
			i = j
		}
	}
	if int(t.n) <= smallKids/2 {
		// Back to a small array.
		old := t.ents
		t.ents = make([]kid[T], 0, smallKids)
		t.hashed = false
		for _, e := range old {
			if e.n != nil {
				t.ents = append(t.ents, e)
			}
		}
	}
}
