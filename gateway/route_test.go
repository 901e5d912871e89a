package gateway

import (
	"strconv"
	"testing"

	"github.com/valyala/fastjson"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
)

// routeFixture is a gateway with n socketless subscribers of "feed.x" whose
// writers are held off, so routed frames stay queued until drained.
type routeFixture struct {
	g     *Gateway
	conns []*conn
}

func newRouteFixture(tb testing.TB, n int, cd codec) *routeFixture {
	tb.Helper()
	v, _ := auth.NewVerifier(testSecret)
	g, err := New(Config{Verifier: v, PublishRate: -1})
	if err != nil {
		tb.Fatal(err)
	}
	f := &routeFixture{g: g}
	for i := 0; i < n; i++ {
		c := &conn{g: g, codec: cd, seq: uint64(i), ident: auth.Identity{Tenant: "t1", User: "u" + strconv.Itoa(i)}}
		c.state.Store(stateOpen)
		c.writing = true // no writer goroutine: the test drains
		pattern := "feed.*"
		if i%2 == 1 {
			pattern = "feed.x"
		}
		if err := g.subscribeRoute(c, pattern); err != nil {
			tb.Fatal(err)
		}
		c.subs = []string{pattern}
		c.nsubs.Store(1)
		f.conns = append(f.conns, c)
	}
	return f
}

// drain releases every queued frame, as writers would after writing.
func (f *routeFixture) drain() {
	for _, c := range f.conns {
		for i, b := range c.out {
			b.Release()
			c.out[i] = nil
		}
		c.out = c.out[:0]
		c.outBytes = 0
	}
}

func TestRouteZeroAllocs(t *testing.T) {
	for _, cd := range []codec{codecJSON, codecProto} {
		f := newRouteFixture(t, 100, cd)
		env := &pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: []byte("hello world"), Text: true, Timestamp: 1,
			Headers: []*pb.Header{{Key: "trace-id", Value: "abc"}}}
		f.g.route(env, nil)
		f.drain()
		allocs := testing.AllocsPerRun(500, func() {
			if n := f.g.route(env, nil); n != 100 {
				t.Fatalf("delivered %d", n)
			}
			f.drain()
		})
		if allocs != 0 {
			t.Errorf("codec %d: %v allocs per routed message", cd, allocs)
		}
	}
}

// From a decoded publish (both codecs' decoders) to frames queued for 100
// subscribers: no allocation in steady state.
func TestPublishPathZeroAllocs(t *testing.T) {
	f := newRouteFixture(t, 100, codecJSON)
	pubc := &conn{g: f.g, codec: codecJSON, ident: auth.Identity{Tenant: "t1"}, id: "pub"}
	pubc.state.Store(stateOpen)
	pubc.writing = true
	jsonIn := []byte(`{"op":"pub","subject":"feed.x","data":"hello world"}`)
	pbIn, _ := (&pb.ClientFrame{Op: pb.Op_OP_PUB, Subject: "feed.x", Data: []byte("hello world")}).MarshalVT()
	d := &decoder{}
	var p fastjson.Parser
	run := func(text bool) {
		fr := &d.frame
		pb.ResetClientFrame(fr)
		var err error
		if text {
			d.scratch, err = pb.DecodeClientJSON(&p, jsonIn, fr, d.scratch)
		} else {
			err = fr.UnmarshalVTUnsafe(pbIn)
		}
		if err != nil {
			t.Fatal(err)
		}
		pubc.publish(text, fr)
		f.drain()
	}
	for _, text := range []bool{true, false} {
		run(text)
		if allocs := testing.AllocsPerRun(500, func() { run(text) }); allocs != 0 {
			t.Errorf("text=%v: %v allocs per publish", text, allocs)
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		for _, cd := range []codec{codecJSON, codecProto} {
			name := "subs=" + strconv.Itoa(n) + "/codec=json"
			if cd == codecProto {
				name = "subs=" + strconv.Itoa(n) + "/codec=proto"
			}
			b.Run(name, func(b *testing.B) {
				f := newRouteFixture(b, n, cd)
				env := &pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: make([]byte, 128), Timestamp: 1}
				f.g.route(env, nil) // warm up: queues reach their steady capacity
				f.drain()
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					f.g.route(env, nil)
					f.drain()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			})
		}
	}
}
