package router

import (
	"math/rand/v2"
	"sync/atomic"
	"unsafe"
)

// Result cache
//
// The result cache maps (tenant, subject) to the slice Match returned. It is a
// fixed array of sets shared by all tenants, indexed by a hash of tenant and
// subject (the key). A set has eight ways: one cache line of 32-bit tags (of
// each way's key, as hints) and the set's doorkeeper (below), followed by
// eight slots, so a lookup reads one line to find the way, and a miss,
// admission included, costs one line. Victims are chosen round robin, empty
// ways first.
//
// A slot is a seqlock made of atomic words, so a cache hit takes no lock and
// writes no shared memory, and filling a slot on a miss allocates nothing:
// the subject is stored inline as words (subjects longer than
// maxCachedSubject bytes are not cached), the tenant through the pointer to
// its trie, and the result as a pointer to its first element and a length.
//
// An entry is valid while the generation it was computed at equals its trie's
// current generation. The generation is the trie's sequence lock (node.go):
// odd while a writer changes the trie, bumped again after, and a trie that
// is dropped gets the dead bit, which no entry carries. Match caches only a
// result whose walk saw the same even generation before and after, so an
// entry is never newer than its generation says.
//
// Admission: a subject that is not in its set is cached only on its second
// miss within a while (a TinyLFU-style doorkeeper: seven 32-bit fingerprints
// of subjects that missed in the set, replaced at random). One-off subjects, such
// as reply inboxes, then neither evict hot entries nor pay for filling a slot
// (about a dozen locked stores). A stale entry of the same key is refreshed
// at once.
//
// Writers (missing Matches) claim a slot by moving seq from even to odd with a
// CAS, fill it, publish it with seq+2, then set the tag; a writer that loses
// the CAS skips caching. Readers load seq, the fields, then seq again, and use
// the entry only if seq was even and unchanged.

const (
	// DefaultCacheSize is the number of result cache entries when
	// Config.CacheSize is zero.
	DefaultCacheSize = 4096
	// maxCachedSubject is the longest subject the result cache stores.
	maxCachedSubject = 80
	cacheWords       = maxCachedSubject / 8
	cacheWays        = 8
)

// A slot is one result cache entry (128 bytes: two cache lines).
type slot[T comparable] struct {
	seq  atomic.Uint64 // odd while a writer fills the slot
	key  atomic.Uint64 // hash of tenant and subject
	t    atomic.Pointer[trie[T]]
	gen  atomic.Uint64 // t's generation the result was computed at
	res  atomic.Pointer[T]
	lens atomic.Uint64 // len(subject) | len(result)<<32
	w    [cacheWords]atomic.Uint64
}

// A cacheSet is eight ways of the result cache: a line with their tags, the
// set's doorkeeper fingerprints and its victim counter, then the slots.
type cacheSet[T comparable] struct {
	tags   [cacheWays]atomic.Uint32 // key>>32|1 per way, 0 when empty; hints
	ghosts [ghostWays]atomic.Uint32 // doorkeeper fingerprints
	next   atomic.Uint32            // round-robin victim
	slots  [cacheWays]slot[T]
}

// ghostWays is the number of doorkeeper fingerprints per set.
const ghostWays = 7

// seen reports whether fp is among the set's doorkeeper fingerprints.
func (set *cacheSet[T]) seen(fp uint32) bool {
	for g := range set.ghosts {
		if set.ghosts[g].Load() == fp {
			return true
		}
	}
	return false
}

// tagOfKey returns the tag of a cache key.
func tagOfKey(key uint64) uint32 { return uint32(key>>32) | 1 }

// resultCache is the router-wide match result cache.
type resultCache[T comparable] struct {
	sets []cacheSet[T]
	mask uint64
}

func newResultCache[T comparable](size int) *resultCache[T] {
	n := 1
	for n*cacheWays < size {
		n <<= 1
	}
	return &resultCache[T]{sets: make([]cacheSet[T], n), mask: uint64(n - 1)}
}

// get returns the cached result for (tenant, subject), whose hash is key.
// len(subject) must be <= maxCachedSubject. Lock-free.
func (c *resultCache[T]) get(key uint64, tenant, subject string) ([]T, bool) {
	set := &c.sets[key&c.mask]
	tag := tagOfKey(key)
	for w := range set.tags {
		if set.tags[w].Load() == tag {
			if r, ok := set.slots[w].read(key, tenant, subject); ok {
				return r, true
			}
		}
	}
	return nil, false
}

func (s *slot[T]) read(key uint64, tenant, subject string) ([]T, bool) {
	seq := s.seq.Load()
	if seq&1 != 0 || s.key.Load() != key {
		return nil, false
	}
	t := s.t.Load()
	lens := s.lens.Load()
	if t == nil || int(uint32(lens)) != len(subject) || t.name != tenant {
		return nil, false
	}
	for k := 0; k < (len(subject)+7)>>3; k++ {
		if s.w[k].Load() != subjectWord(subject, k) {
			return nil, false
		}
	}
	g := s.gen.Load()
	p := s.res.Load()
	if g != t.gen.Load() || s.seq.Load() != seq {
		return nil, false
	}
	return unsafe.Slice(p, int(lens>>32)), true
}

// put caches res, computed for (t, subject) at generation gen. res must be
// immutable (a shared node slice or a combo result). Lock-free.
func (c *resultCache[T]) put(key uint64, t *trie[T], gen uint64, subject string, res []T) {
	set := &c.sets[key&c.mask]
	tag := tagOfKey(key)
	way := -1
	for w := range set.tags {
		if tg := set.tags[w].Load(); tg == tag {
			way = w // refresh this key's stale entry
			break
		} else if tg == 0 && way < 0 {
			way = w
		}
	}
	if way < 0 || set.tags[way].Load() != tag {
		// Not cached before: admit on the second miss only.
		if fp := uint32(key>>16) | 1; !set.seen(fp) {
			// Replace a random fingerprint: where it goes must vary from
			// miss to miss, or two subjects could keep evicting each other.
			set.ghosts[rand.Uint32()%ghostWays].Store(fp)
			return
		}
	}
	if way < 0 {
		way = int(set.next.Add(1) % cacheWays)
	}
	s := &set.slots[way]
	seq := s.seq.Load()
	if seq&1 != 0 || !s.seq.CompareAndSwap(seq, seq+1) {
		return // another writer is filling this slot
	}
	s.key.Store(key)
	s.t.Store(t)
	s.gen.Store(gen)
	var p *T
	if len(res) > 0 {
		p = &res[0]
	}
	s.res.Store(p)
	s.lens.Store(uint64(len(subject)) | uint64(len(res))<<32)
	for k := 0; k < (len(subject)+7)>>3; k++ {
		s.w[k].Store(subjectWord(subject, k))
	}
	s.seq.Store(seq + 2)
	set.tags[way].Store(tag)
}

// Combined results
//
// When a subject matches several nodes (say "a.b.c" and "a.*.c" and "a.>"),
// the result is the concatenation of their subscriber slices. The combo cache
// keeps such concatenations, keyed by the backing arrays they were built from:
// for each node, the address of subs[0] and len(subs). A Match marks every
// array it reads shared, and a shared array's prefix is never written again
// (see node.go), while the combo keeps the array alive so the address cannot
// be reused: equal keys therefore mean equal contents, and a combo stays
// valid until one of its nodes changes, whatever else changes in the tenant.
// Slots are replaced on collision. Lock-free.

// comboKey identifies the contents of one node's subscriber slice.
type comboKey[T comparable] struct {
	p *T
	n int
}

// inlineKeys is how many keys a combo holds without a second allocation.
const inlineKeys = 4

// A combo is an immutable concatenation of several nodes' subscribers.
type combo[T comparable] struct {
	res  []T
	nk   int
	k    [inlineKeys]comboKey[T]
	more []comboKey[T] // all keys when nk > inlineKeys
}

// maxComboLen is the largest combined result the combo cache keeps. A larger
// one is rebuilt on each result cache miss: delivering to that many
// subscribers costs far more than the allocation.
const maxComboLen = 4096

// comboCache is set associative like the result cache.
type comboCache[T comparable] struct {
	sets []comboSet[T]
	mask uint64
}

// A comboSet is eight ways: a line of tags, then a line of pointers.
type comboSet[T comparable] struct {
	tags [cacheWays]atomic.Uint64
	ptrs [cacheWays]atomic.Pointer[combo[T]]
}

func newComboCache[T comparable](size int) comboCache[T] {
	n := 1
	for n*cacheWays < size {
		n <<= 1
	}
	return comboCache[T]{sets: make([]comboSet[T], n), mask: uint64(n - 1)}
}

// result returns the concatenation of the subscriber slices keys (each
// shared and non-empty), from the cache or newly built.
func (cc *comboCache[T]) result(keys []comboKey[T]) []T {
	h := uint64(len(keys))
	total := 0
	for _, k := range keys {
		h = mix(h^uint64(uintptr(unsafe.Pointer(k.p))), uint64(k.n)^wyp1)
		total += k.n
	}
	set := &cc.sets[h&cc.mask]
	tag := h | 1
	way := -1
	for w := range set.tags {
		switch set.tags[w].Load() {
		case tag:
			if c := set.ptrs[w].Load(); c != nil && c.same(keys) {
				return c.res
			}
		case 0:
			if way < 0 {
				way = w
			}
		}
	}
	c := &combo[T]{res: make([]T, 0, total), nk: len(keys)}
	if len(keys) <= inlineKeys {
		copy(c.k[:], keys)
	} else {
		c.more = append([]comboKey[T](nil), keys...)
	}
	for _, k := range keys {
		c.res = append(c.res, unsafe.Slice(k.p, k.n)...)
	}
	if total <= maxComboLen {
		if way < 0 {
			way = int(h>>32) % cacheWays
		}
		// Racing fills may pair a tag with another way's combo for a
		// moment: tags are hints, same() decides.
		set.ptrs[way].Store(c)
		set.tags[way].Store(tag)
	}
	return c.res
}

// same reports whether c was built from exactly keys.
func (c *combo[T]) same(keys []comboKey[T]) bool {
	if c.nk != len(keys) {
		return false
	}
	if c.nk > inlineKeys {
		for i, k := range keys {
			if c.more[i] != k {
				return false
			}
		}
		return true
	}
	for i, k := range keys {
		if c.k[i] != k {
			return false
		}
	}
	return true
}
