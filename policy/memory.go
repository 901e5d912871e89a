package policy

import "github.com/tetratelabs/wazero/experimental"

// limitedMemory backs one instance's linear memory and enforces
// Config.MaxMemoryPages itself, rather than through
// RuntimeConfig.WithMemoryLimitPages: wazero fails an over-limit memory.grow
// silently (the guest sees -1), while this allocator also records the
// attempt, so the host can deny the call with reason "memory_limit" even
// when the guest copes with the failed grow.
//
// It is used only by the goroutine that runs the instance.
type limitedMemory struct {
	buf      []byte
	limit    uint64 // bytes
	breached bool   // a grow past limit was refused since the last reset
}

var _ experimental.LinearMemory = (*limitedMemory)(nil)

// memoryAllocator returns an allocator whose memories hold at most limit
// bytes; each new memory is reported through onAlloc.
func memoryAllocator(limit uint64, onAlloc func(*limitedMemory)) experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(_, _ uint64) experimental.LinearMemory {
		lm := &limitedMemory{limit: limit}
		onAlloc(lm)
		return lm
	})
}

// Reallocate implements experimental.LinearMemory: it grows the memory to
// size bytes, or returns nil (the grow fails) past the limit.
func (m *limitedMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		m.breached = true
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	c := 2 * uint64(cap(m.buf))
	if c < size {
		c = size
	}
	if c > m.limit {
		c = m.limit
	}
	b := make([]byte, size, c)
	copy(b, m.buf)
	m.buf = b
	return b
}

// Free implements experimental.LinearMemory.
func (m *limitedMemory) Free() { m.buf = nil }
