package main

import (
	"testing"
	"time"
)

func TestHistIndexRoundTrip(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 123456, 1 << 40, 1<<63 - 1} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("index %d of %d out of range", i, v)
		}
		hi := histValue(i)
		if hi < v {
			t.Fatalf("bucket %d upper bound %d below value %d", i, hi, v)
		}
		if v >= histSub && float64(hi-v) > float64(v)/float64(histSub) {
			t.Fatalf("value %d reported as %d: error above 1/%d", v, hi, histSub)
		}
		if i > 0 && histValue(i-1) >= v {
			t.Fatalf("value %d also fits bucket %d", v, i-1)
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	s := h.Snapshot()
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {0.999, 9990 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := s.Quantile(tc.q)
		if d := got - tc.want; d < 0 || float64(d) > float64(tc.want)/100 {
			t.Errorf("q%.3f = %v, want %v (+1%%)", tc.q, got, tc.want)
		}
	}
	if s.Summary().Count != 10000 || s.max != uint64(10000*time.Microsecond) {
		t.Fatalf("summary %+v", s.Summary())
	}
	h.Record(-time.Second) // counts as zero
	iv := h.Snapshot().Sub(s)
	if iv.n != 1 || iv.Quantile(1) != 0 {
		t.Fatalf("interval n %d q1 %v", iv.n, iv.Quantile(1))
	}
}

func TestPayloadTime(t *testing.T) {
	p := newPayload(64)
	now := time.Now().UnixNano()
	fillPayload(p, now)
	got, ok := payloadTime(p)
	if !ok || got != now || len(p) != 64 {
		t.Fatalf("got %d %v len %d, want %d", got, ok, len(p), now)
	}
	if _, ok := payloadTime([]byte("short")); ok {
		t.Fatal("short payload parsed")
	}
}

func TestLeastSquares(t *testing.T) {
	slope, icpt, r2 := leastSquares([]float64{0, 1000, 5000}, []float64{20e6, 20e6 + 4096e3, 20e6 + 5*4096e3})
	if round(slope, 3) != 4096 || round(icpt, 0) != 20e6 || round(r2, 6) != 1 {
		t.Fatalf("slope %v icpt %v r2 %v", slope, icpt, r2)
	}
}
