// Package pool hands out size-classed, reference-counted byte buffers.
//
// One encoded delivery frame (WebSocket header plus body) is written into a
// Buf once and shared by every subscriber that receives it: the publisher
// Retains it once per queue it is placed on, each writer Releases it after
// the bytes reach the socket, and the last Release returns the memory to the
// pool. Buffers larger than the biggest class are allocated and left to the
// garbage collector.
package pool

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// Size classes: 256 B, 512 B, 1 KiB ... 1 MiB (powers of two).
const (
	minShift   = 8
	maxShift   = 20
	numClasses = maxShift - minShift + 1
	// MaxPooled is the largest capacity served from the pool.
	MaxPooled = 1 << maxShift
)

var classes [numClasses]sync.Pool

// Buf is a pooled byte buffer with a reference count. B is the payload
// window the owner wrote; its backing array has the capacity of the size
// class. The zero Buf is not usable: obtain one with Get.
type Buf struct {
	// B holds the bytes. Owners may reslice B anywhere within the backing
	// array (Get(n) returns it as Mem()[:n]) before sharing the buffer; once
	// shared it is read-only.
	B     []byte
	mem   []byte // the whole backing array of the class
	refs  atomic.Int32
	class int8 // -1 when not pooled
}

// classFor returns the class index for a capacity of n bytes, or -1.
func classFor(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	if n > MaxPooled {
		return -1
	}
	return bits.Len(uint(n-1)) - minShift
}

// Get returns a buffer with len(B) == n and a reference count of 1.
// The contents of B are unspecified.
func Get(n int) *Buf {
	c := classFor(n)
	if c < 0 {
		mem := make([]byte, n)
		b := &Buf{B: mem, mem: mem, class: -1}
		b.refs.Store(1)
		return b
	}
	var b *Buf
	if v := classes[c].Get(); v != nil {
		b = v.(*Buf)
		b.B = b.mem[:n]
	} else {
		mem := make([]byte, 1<<(c+minShift))
		b = &Buf{B: mem[:n], mem: mem, class: int8(c)}
	}
	b.refs.Store(1)
	return b
}

// Retain adds n references, one for each additional holder.
func (b *Buf) Retain(n int32) {
	b.refs.Add(n)
}

// Release drops one reference; the last one returns the buffer to its pool.
// A Buf must not be touched by a holder after its Release.
func (b *Buf) Release() {
	r := b.refs.Add(-1)
	if r > 0 {
		return
	}
	if r < 0 {
		panic("pool: Release of a released buffer")
	}
	if b.class >= 0 {
		b.B = b.mem[:0]
		classes[b.class].Put(b)
	}
}

// Mem returns the whole backing array, whatever window B shows.
func (b *Buf) Mem() []byte {
	return b.mem
}

// Refs reports the current reference count (for tests and assertions).
func (b *Buf) Refs() int32 { return b.refs.Load() }
