package router

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats-server/v2/server/gsl"
)

// Benchmarks run every case on this package's Router (impl=router) and on
// nats-server's generic sublist (impl=gsl, keyed "tenant.subject" since it
// has no tenants), over the same fixture. Compare with
//
//	benchstat -col /impl old.txt
//
// The 1M fixture takes a while to build, so subs=1000000 runs only when the
// -bench pattern names it (for example -bench 'Match.*/subs=1000000').

// benchConn stands for the gateway's connection struct.
type benchConn struct {
	id int
	_  [64]byte // some weight, like a real connection
}

type tsub struct {
	tenant, pattern string
	c               *benchConn
}

type tsubj struct{ tenant, subject string }

// fixture is a synthetic workload: n subscriptions over n/250 tenants, 80%
// literal patterns of 3-4 tokens, 15% with one "*" somewhere, 5% ending in
// ">"; tokens are Zipf-distributed so that popular subjects have many
// subscribers and a long tail has one.
type fixture struct {
	n       int
	tenants []string
	subs    []tsub
	extra   []tsub  // not in the fixture: for Insert/Remove/churn
	hot     []tsubj // 1024 subjects for cache hits
	cold    []tsubj // distinct 4-token subjects, more than the cache holds
	gslHot  []string
	gslCold []string

	once sync.Once
	r    *Router[*benchConn]
	g    *gsl.GenericSublist[*benchConn]
}

var services = []string{"orders", "users", "chat", "metrics", "billing", "inventory",
	"search", "auth", "notify", "presence", "ledger", "media"}
var regions = []string{"eu", "us", "ap", "sa", "af", "me", "oc", "cn", "in", "jp", "kr", "ru", "ca", "mx", "br", "za"}
var events = []string{"created", "updated", "deleted", "viewed", "typing", "joined", "left", "failed"}

type gen struct {
	rng              *rand.Rand
	svc, reg, id, ev *rand.Zipf
}

func newGen(seed uint64) *gen {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	return &gen{
		rng: rng,
		svc: rand.NewZipf(rng, 1.2, 1, uint64(len(services)-1)),
		reg: rand.NewZipf(rng, 1.2, 1, uint64(len(regions)-1)),
		id:  rand.NewZipf(rng, 1.1, 4, 4999),
		ev:  rand.NewZipf(rng, 1.2, 1, uint64(len(events)-1)),
	}
}

// literal returns a subject of 3 or 4 tokens: service.region.id[.event].
func (g *gen) literal(tokens int) []string {
	t := []string{services[g.svc.Uint64()], regions[g.reg.Uint64()], fmt.Sprintf("u%d", g.id.Uint64())}
	if tokens == 4 {
		t = append(t, events[g.ev.Uint64()])
	}
	return t
}

func (g *gen) pattern() string {
	t := g.literal(3 + g.rng.IntN(2))
	switch x := g.rng.IntN(100); {
	case x < 80:
	case x < 95:
		t[g.rng.IntN(len(t))] = "*"
	default:
		t = append(t[:1+g.rng.IntN(len(t)-1)], ">")
	}
	return strings.Join(t, ".")
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[int]*fixture{}
)

func getFixture(n int) *fixture {
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f := fixtures[n]; f != nil {
		return f
	}
	f := &fixture{n: n}
	g := newGen(uint64(n))
	nt := max(2, n/250)
	for i := range nt {
		f.tenants = append(f.tenants, fmt.Sprintf("tenant-%05d", i))
	}
	conns := make([]*benchConn, max(1, n/4))
	for i := range conns {
		conns[i] = &benchConn{id: i}
	}
	seen := map[tsub]bool{}
	mk := func(k int) []tsub {
		var out []tsub
		for len(out) < k {
			s := tsub{f.tenants[g.rng.IntN(nt)], g.pattern(), conns[g.rng.IntN(len(conns))]}
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
		return out
	}
	f.subs = mk(n)
	f.extra = mk(4096)
	hot := map[tsubj]bool{}
	for len(f.hot) < 1024 {
		s := tsubj{f.tenants[g.rng.IntN(nt)], strings.Join(g.literal(3+g.rng.IntN(2)), ".")}
		if !hot[s] {
			hot[s] = true
			f.hot = append(f.hot, s)
		}
	}
	cold := map[tsubj]bool{}
	for len(f.cold) < 1<<16 {
		s := tsubj{f.tenants[g.rng.IntN(nt)], strings.Join(g.literal(4), ".")}
		if !cold[s] {
			cold[s] = true
			f.cold = append(f.cold, s)
		}
	}
	// Lay the subjects out contiguously in the order they are matched, so
	// that reading them streams from memory instead of chasing a pointer
	// per Match: the benchmark should measure the matchers, not the fixture.
	f.hot, f.gslHot = compact(f.hot)
	f.cold, f.gslCold = compact(f.cold)
	fixtures[n] = f
	return f
}

// compact copies subjects into one arena and returns them with their gsl
// keys ("tenant.subject", in a second arena).
func compact(ss []tsubj) ([]tsubj, []string) {
	var a, g strings.Builder
	for _, s := range ss {
		a.WriteString(s.subject)
		g.WriteString(s.tenant + "." + s.subject)
	}
	arena, garena := a.String(), g.String()
	out := make([]tsubj, len(ss))
	keys := make([]string, len(ss))
	off, goff := 0, 0
	for i, s := range ss {
		out[i] = tsubj{s.tenant, arena[off : off+len(s.subject)]}
		off += len(s.subject)
		k := len(s.tenant) + 1 + len(s.subject)
		keys[i] = garena[goff : goff+k]
		goff += k
	}
	return out, keys
}

func (f *fixture) build() {
	f.once.Do(func() {
		f.r = buildRouter(f.subs)
		f.g = buildGSL(f.subs)
	})
}

func buildRouter(subs []tsub) *Router[*benchConn] {
	r := New[*benchConn](Config{})
	for _, s := range subs {
		if err := r.Insert(s.tenant, s.pattern, s.c); err != nil {
			panic(err)
		}
	}
	return r
}

func buildGSL(subs []tsub) *gsl.GenericSublist[*benchConn] {
	g := gsl.NewSublist[*benchConn]()
	for _, s := range subs {
		if err := g.Insert(s.tenant+"."+s.pattern, s.c); err != nil {
			panic(err)
		}
	}
	return g
}

// benchSizes lists the fixture sizes; 1M only when -bench names it.
func benchSizes() []int {
	sizes := []int{1000, 100000}
	if f := flag.Lookup("test.bench"); f != nil && strings.Contains(f.Value.String(), "1000000") {
		sizes = append(sizes, 1000000)
	}
	return sizes
}

// forEach runs body for every size and both implementations.
func forEach(b *testing.B, body func(b *testing.B, f *fixture, impl string)) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			f := getFixture(n)
			f.build()
			for _, impl := range []string{"router", "gsl"} {
				b.Run("impl="+impl, func(b *testing.B) {
					b.ReportAllocs()
					body(b, f, impl)
				})
			}
		})
	}
}

var (
	sinkN        int
	parallelSink atomic.Int64
)

// BenchmarkMatchHit matches 1024 hot subjects that sit in the result cache
// (gsl has no cache: the same Match).
func BenchmarkMatchHit(b *testing.B) {
	forEach(b, func(b *testing.B, f *fixture, impl string) {
		switch impl {
		case "router":
			for range 2 { // admitted on the second miss
				for _, s := range f.hot {
					f.r.Match(s.tenant, s.subject)
				}
			}
			i := 0
			for b.Loop() {
				s := &f.hot[i&1023]
				sinkN += len(f.r.Match(s.tenant, s.subject))
				i++
			}
		case "gsl":
			n := 0
			cb := func(*benchConn) { n++ }
			i := 0
			for b.Loop() {
				f.g.Match(f.gslHot[i&1023], cb)
				i++
			}
			sinkN += n
		}
	})
}

// BenchmarkMatchMiss matches distinct 4-token subjects, cycling through 65536
// of them: 16 times the result cache, so every Match misses it.
func BenchmarkMatchMiss(b *testing.B) {
	forEach(b, func(b *testing.B, f *fixture, impl string) {
		mask := len(f.cold) - 1
		switch impl {
		case "router":
			for _, s := range f.cold { // steady state: combined results built
				f.r.Match(s.tenant, s.subject)
			}
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			i := 0
			for b.Loop() {
				s := &f.cold[i&mask]
				sinkN += len(f.r.Match(s.tenant, s.subject))
				i++
			}
			runtime.ReadMemStats(&ms1)
			// allocs/op rounds down; this shows a rare allocation.
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(i), "mallocs/op")
		case "gsl":
			n := 0
			cb := func(*benchConn) { n++ }
			i := 0
			for b.Loop() {
				f.g.Match(f.gslCold[i&mask], cb)
				i++
			}
			sinkN += n
		}
	})
}

// BenchmarkInsert times inserting subscriptions into the fixture, in batches
// that are removed again untimed.
func BenchmarkInsert(b *testing.B) {
	forEach(b, func(b *testing.B, f *fixture, impl string) {
		batch := f.extra
		keys := gslKeys(batch)
		for i := 0; i < b.N; {
			k := min(len(batch), b.N-i)
			switch impl {
			case "router":
				for _, s := range batch[:k] {
					f.r.Insert(s.tenant, s.pattern, s.c)
				}
				b.StopTimer()
				for _, s := range batch[:k] {
					f.r.Remove(s.tenant, s.pattern, s.c)
				}
			case "gsl":
				for j, s := range batch[:k] {
					f.g.Insert(keys[j], s.c)
				}
				b.StopTimer()
				for j, s := range batch[:k] {
					f.g.Remove(keys[j], s.c)
				}
			}
			b.StartTimer()
			i += k
		}
	})
}

// BenchmarkRemove times removing subscriptions from the fixture, in batches
// that were inserted untimed.
func BenchmarkRemove(b *testing.B) {
	forEach(b, func(b *testing.B, f *fixture, impl string) {
		batch := f.extra
		keys := gslKeys(batch)
		for i := 0; i < b.N; {
			k := min(len(batch), b.N-i)
			b.StopTimer()
			switch impl {
			case "router":
				for _, s := range batch[:k] {
					f.r.Insert(s.tenant, s.pattern, s.c)
				}
				b.StartTimer()
				for _, s := range batch[:k] {
					f.r.Remove(s.tenant, s.pattern, s.c)
				}
			case "gsl":
				for j, s := range batch[:k] {
					f.g.Insert(keys[j], s.c)
				}
				b.StartTimer()
				for j, s := range batch[:k] {
					f.g.Remove(keys[j], s.c)
				}
			}
			i += k
		}
	})
}

func gslKeys(subs []tsub) []string {
	keys := make([]string, len(subs))
	for i, s := range subs {
		keys[i] = s.tenant + "." + s.pattern
	}
	return keys
}

// BenchmarkMatchParallelChurn matches the hot subjects from every core
// (b.RunParallel) while the subscriptions change: every worker inserts or
// removes one subscription of its own after each 256 Matches, so that tenants'
// cached results keep being invalidated. ns/op is per Match or change.
func BenchmarkMatchParallelChurn(b *testing.B) {
	const every = 256
	forEach(b, func(b *testing.B, f *fixture, impl string) {
		keys := gslKeys(f.extra)
		for range 2 {
			for _, s := range f.hot {
				f.r.Match(s.tenant, s.subject)
			}
		}
		procs := runtime.GOMAXPROCS(0)
		var worker atomic.Int64
		var changes atomic.Int64
		left := make([][]int, procs+1)
		b.RunParallel(func(pb *testing.PB) {
			w := int(worker.Add(1)-1) % procs
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			in := map[int]bool{}
			mine := (len(f.extra) - w + procs - 1) / procs
			n, k := 0, 0
			cb := func(*benchConn) { n++ }
			for i := 0; pb.Next(); i++ {
				if i%every == every-1 {
					j := w + procs*(k%mine) // this worker's subscriptions
					k++
					s := f.extra[j]
					switch {
					case impl == "router" && !in[j]:
						f.r.Insert(s.tenant, s.pattern, s.c)
					case impl == "router":
						f.r.Remove(s.tenant, s.pattern, s.c)
					case !in[j]:
						f.g.Insert(keys[j], s.c)
					default:
						f.g.Remove(keys[j], s.c)
					}
					in[j] = !in[j]
					changes.Add(1)
					continue
				}
				switch impl {
				case "router":
					s := &f.hot[rng.IntN(1024)]
					n += len(f.r.Match(s.tenant, s.subject))
				case "gsl":
					f.g.Match(f.gslHot[rng.IntN(1024)], cb)
				}
			}
			for j, ok := range in {
				if ok {
					left[w] = append(left[w], j)
				}
			}
			parallelSink.Add(int64(n))
		})
		b.StopTimer()
		b.ReportMetric(float64(changes.Load())/b.Elapsed().Seconds(), "changes/s")
		// Put the fixture back.
		for _, js := range left {
			for _, j := range js {
				s := f.extra[j]
				switch impl {
				case "router":
					f.r.Remove(s.tenant, s.pattern, s.c)
				case "gsl":
					f.g.Remove(keys[j], s.c)
				}
			}
		}
	})
}

// BenchmarkRemoveFanout removes, one by one, 10000 values subscribed to one
// literal subject (re-inserted untimed). With match=true a Match of that
// subject precedes every removal, so each removal must copy the set it
// handed out (copy-on-write); without, removal is a swap in place.
func BenchmarkRemoveFanout(b *testing.B) {
	const n = 10000
	conns := make([]*benchConn, n)
	for i := range conns {
		conns[i] = &benchConn{id: i}
	}
	for _, match := range []bool{false, true} {
		b.Run(fmt.Sprintf("values=%d/match=%v", n, match), func(b *testing.B) {
			for _, impl := range []string{"router", "gsl"} {
				b.Run("impl="+impl, func(b *testing.B) {
					b.ReportAllocs()
					r := New[*benchConn](Config{})
					g := gsl.NewSublist[*benchConn]()
					cnt := 0
					cb := func(*benchConn) { cnt++ }
					for i := 0; i < b.N; {
						b.StopTimer()
						for _, c := range conns {
							switch impl {
							case "router":
								r.Insert("acme", "chat.room.lobby", c)
							case "gsl":
								g.Insert("acme.chat.room.lobby", c)
							}
						}
						b.StartTimer()
						for _, c := range conns[:min(n, b.N-i)] {
							switch {
							case impl == "router" && match:
								sinkN += len(r.Match("acme", "chat.room.lobby"))
								r.Remove("acme", "chat.room.lobby", c)
							case impl == "router":
								r.Remove("acme", "chat.room.lobby", c)
							case match:
								g.Match("acme.chat.room.lobby", cb)
								g.Remove("acme.chat.room.lobby", c)
							default:
								g.Remove("acme.chat.room.lobby", c)
							}
							i++
						}
					}
					sinkN += cnt
				})
			}
		})
	}
}

// BenchmarkMemory builds the fixture from scratch and reports the live heap
// it takes per subscription (B/sub), after a GC. Patterns and values exist
// before the measurement, so only the structure is counted.
func BenchmarkMemory(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			f := getFixture(n)
			for _, impl := range []string{"router", "gsl"} {
				b.Run("impl="+impl, func(b *testing.B) {
					var perSub float64
					for range b.N {
						var keep any
						before := heapInUse()
						switch impl {
						case "router":
							keep = buildRouter(f.subs)
						case "gsl":
							keep = buildGSL(f.subs)
						}
						after := heapInUse()
						runtime.KeepAlive(keep)
						perSub += float64(after-before) / float64(len(f.subs))
					}
					b.ReportMetric(perSub/float64(b.N), "B/sub")
				})
			}
		})
	}
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
