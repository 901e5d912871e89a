package pool

import (
	"testing"
)

func TestClassFor(t *testing.T) {
	cases := []struct{ n, class int }{
		{0, 0}, {1, 0}, {256, 0}, {257, 1}, {512, 1}, {513, 2}, {1 << 20, numClasses - 1}, {1<<20 + 1, -1},
	}
	for _, c := range cases {
		if got := classFor(c.n); got != c.class {
			t.Errorf("classFor(%d) = %d, want %d", c.n, got, c.class)
		}
	}
}

func TestGetRetainRelease(t *testing.T) {
	b := Get(300)
	if len(b.B) != 300 || cap(b.B) != 512 {
		t.Fatalf("len %d cap %d", len(b.B), cap(b.B))
	}
	b.Retain(2)
	if b.Refs() != 3 {
		t.Fatalf("refs %d", b.Refs())
	}
	b.Release()
	b.Release()
	b.Release()
	if b.Refs() != 0 {
		t.Fatalf("refs %d", b.Refs())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("double release did not panic")
		}
	}()
	b.Release()
}

func TestLarge(t *testing.T) {
	b := Get(MaxPooled + 1)
	if len(b.B) != MaxPooled+1 || b.class != -1 {
		t.Fatal("large buffer")
	}
	b.Release()
}

func TestZeroAllocSteadyState(t *testing.T) {
	Get(1000).Release()
	allocs := testing.AllocsPerRun(1000, func() {
		b := Get(1000)
		b.Retain(3)
		for i := 0; i < 4; i++ {
			b.Release()
		}
	})
	// sync.Pool may drop items on GC; allow a fraction, never one per op.
	if allocs >= 0.5 {
		t.Fatalf("allocs per Get/Release = %v", allocs)
	}
}

func BenchmarkGetRelease(b *testing.B) {
	for _, n := range []int{64, 1024, 16384} {
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				buf := Get(n)
				buf.Retain(1)
				buf.Release()
				buf.Release()
			}
		})
	}
}

func BenchmarkGetReleaseParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			Get(512).Release()
		}
	})
}

func sizeName(n int) string {
	switch {
	case n >= 1024:
		return "size=" + itoa(n/1024) + "KiB"
	default:
		return "size=" + itoa(n) + "B"
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
