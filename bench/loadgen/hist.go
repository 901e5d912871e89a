package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Hist is a concurrent log-linear histogram of durations in nanoseconds in
// the style of HDR histograms: 128 linear sub-buckets per power of two, so
// a recorded value is reported within 0.8% of its true value. Record is
// lock-free (one atomic add per bucket); a Hist holds 59 KiB of counters and
// its zero value is ready to use.
type Hist struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histBuckets = (64 - histSubBits) * histSub
)

// histIndex maps v to its bucket.
func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return (shift+1)*histSub + int(v>>uint(shift)) - histSub
}

// histValue returns the highest value that maps to bucket i.
func histValue(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	lo := uint64(histSub+i%histSub) << uint(shift)
	return lo + (uint64(1) << uint(shift)) - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Hist) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[histIndex(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count returns the number of recorded values.
func (h *Hist) Count() uint64 { return h.n.Load() }

// Snapshot is a point-in-time copy of a Hist, used to compute quantiles and
// interval differences.
type Snapshot struct {
	counts []uint64
	n, sum uint64
	max    uint64
}

// Snapshot copies the counters.
func (h *Hist) Snapshot() *Snapshot {
	s := &Snapshot{counts: make([]uint64, histBuckets)}
	for i := range s.counts {
		s.counts[i] = h.counts[i].Load()
	}
	s.n, s.sum, s.max = h.n.Load(), h.sum.Load(), h.max.Load()
	return s
}

// Sub returns s minus an earlier snapshot of the same Hist (max is s's max
// since the start, an upper bound for the interval).
func (s *Snapshot) Sub(prev *Snapshot) *Snapshot {
	d := &Snapshot{counts: make([]uint64, histBuckets), n: s.n - prev.n, sum: s.sum - prev.sum}
	for i := range d.counts {
		d.counts[i] = s.counts[i] - prev.counts[i]
		if d.counts[i] != 0 {
			d.max = histValue(i)
		}
	}
	if d.max > s.max {
		d.max = s.max
	}
	return d
}

// Quantile returns the value at quantile q (0..1).
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.n)))
	if rank == 0 {
		rank = 1
	}
	var c uint64
	for i, k := range s.counts {
		c += k
		if c >= rank {
			v := histValue(i)
			if v > s.max {
				v = s.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(s.max)
}

// LatencySummary is the JSON form of a latency distribution, in
// microseconds.
type LatencySummary struct {
	Count  uint64  `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P90Us  float64 `json:"p90_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p99_9_us"`
	MaxUs  float64 `json:"max_us"`
}

func us(d time.Duration) float64 { return math.Round(float64(d)/1e1) / 1e2 }

// Summary returns the snapshot's summary.
func (s *Snapshot) Summary() LatencySummary {
	ls := LatencySummary{Count: s.n}
	if s.n == 0 {
		return ls
	}
	ls.MeanUs = us(time.Duration(s.sum / s.n))
	ls.P50Us = us(s.Quantile(0.50))
	ls.P90Us = us(s.Quantile(0.90))
	ls.P99Us = us(s.Quantile(0.99))
	ls.P999Us = us(s.Quantile(0.999))
	ls.MaxUs = us(time.Duration(s.max))
	return ls
}

// Summary summarizes everything recorded so far.
func (h *Hist) Summary() LatencySummary { return h.Snapshot().Summary() }
