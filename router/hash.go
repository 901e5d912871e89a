package router

import (
	"math/bits"
	"math/rand/v2"
)

// The router hashes tenants, subjects and tokens with a small inline
// wyhash-style function (the final mix of wyhash v4, public domain). It is a
// few times cheaper than hash/maphash for the short strings a subject is made
// of, because it inlines the short-string case and needs no call through the
// runtime. The seed is random per process, so hash flooding needs the seed.
const (
	wyp0 = 0xa0761d6478bd642f
	wyp1 = 0xe7037ed1a0b428db
)

// hashSeed is the per-process seed of every hash the package computes.
var hashSeed = rand.Uint64() | 1

// mix folds the 128-bit product of a and b into 64 bits.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// load8 reads s[i:i+8] as a little-endian word (one load on amd64/arm64).
func load8(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// load4 reads s[i:i+4] as a little-endian word.
func load4(s string, i int) uint64 {
	s = s[i : i+4]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
}

// strhash hashes s with seed.
func strhash(s string, seed uint64) uint64 {
	n := len(s)
	seed ^= wyp0
	var a, b uint64
	switch {
	case n == 0:
	case n < 4:
		a = uint64(s[0])<<16 | uint64(s[n>>1])<<8 | uint64(s[n-1])
	case n <= 16:
		o := (n >> 3) << 2
		a = load4(s, 0)<<32 | load4(s, o)
		b = load4(s, n-4)<<32 | load4(s, n-4-o)
	default:
		p := 0
		for ; n-p > 16; p += 16 {
			seed = mix(load8(s, p)^wyp1, load8(s, p+8)^seed)
		}
		a = load8(s, n-16)
		b = load8(s, n-8)
	}
	hi, lo := bits.Mul64(a^wyp1, b^seed)
	return mix(lo^wyp0^uint64(n), hi^wyp1)
}

// subjectWord returns the k-th of the (len(s)+7)/8 words that encode s in a
// cache slot: whole 8-byte words, the last one overlapping its predecessor
// when len(s) is not a multiple of 8 (so no byte loop is needed); strings
// shorter than 8 bytes are packed into one word. With the length compared
// separately, equal words mean equal strings.
func subjectWord(s string, k int) uint64 {
	n := len(s)
	if n < 8 {
		var w uint64
		for i := n - 1; i >= 0; i-- {
			w = w<<8 | uint64(s[i])
		}
		return w
	}
	if o := k << 3; o+8 <= n {
		return load8(s, o)
	}
	return load8(s, n-8)
}
