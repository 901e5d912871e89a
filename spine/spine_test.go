package spine

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/pb"
)

func newPair(t *testing.T) (hub, a, b *Spine) {
	t.Helper()
	hub, err := New(Config{NodeID: "hub", EmbeddedListen: "127.0.0.1:0", HeartbeatInterval: testBeat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	url := hub.EmbeddedGatewayURL()
	if url == "" {
		t.Fatal("no embedded URL")
	}
	a, err = New(Config{URL: url, NodeID: "a", HeartbeatInterval: testBeat, Linger: testLinger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	b, err = New(Config{URL: url, NodeID: "b", HeartbeatInterval: testBeat, Linger: testLinger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return hub, a, b
}

func TestPublishReachesOtherNodeOnce(t *testing.T) {
	_, a, b := newPair(t)
	got := make(chan string, 16)
	b.SetHandler(func(env *pb.Envelope) {
		if env == nil {
			return
		}
		got <- env.Tenant + "/" + env.Subject + "/" + string(env.Payload) + "/" + env.OriginNode
	})
	a.SetHandler(func(env *pb.Envelope) {
		if env != nil {
			got <- "a-got-own:" + env.Subject
		}
	})
	if err := b.Watch("t1", ">"); err != nil {
		t.Fatal(err)
	}
	if err := a.Watch("t1", ">"); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, a)
	for _, s := range []string{"x.1", "x.2"} {
		if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: s, Payload: []byte("p")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Publish(&pb.Envelope{Tenant: "t2", Subject: "unwatched", Payload: []byte("p")}); err != nil {
		t.Fatal(err)
	}
	a.Flush(time.Second)
	for _, want := range []string{"t1/x.1/p/a", "t1/x.2/p/a"} {
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("got %q want %q", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("timeout")
		}
	}
	// b publishes a marker: a gets exactly it (a never saw its own).
	if err := b.Publish(&pb.Envelope{Tenant: "t1", Subject: "marker"}); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != "a-got-own:marker" {
			t.Fatalf("got %q, want only the marker", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timeout")
	}
	// t2 has no listener: a skipped it.
	if a.Stats.Published.Load() != 2 || a.Stats.Unheard.Load() != 1 || b.Stats.Received.Load() != 2 {
		t.Fatalf("stats a.pub=%d a.unheard=%d b.recv=%d", a.Stats.Published.Load(), a.Stats.Unheard.Load(), b.Stats.Received.Load())
	}
}

// An envelope whose tenant differs from its NATS subject's is dropped.
func TestForgedTenantDropped(t *testing.T) {
	hub, _, b := newPair(t)
	got := make(chan *pb.Envelope, 4)
	b.SetHandler(func(env *pb.Envelope) {
		if env != nil {
			got <- env.CloneVT()
		}
	})
	if err := b.Watch("victim", ">"); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(hub.EmbeddedGatewayURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	forged, _ := (&pb.Envelope{Tenant: "attacker", Subject: "x", OriginNode: "evil"}).MarshalVT()
	nc.Publish("arq.victim.x", forged)
	good, _ := (&pb.Envelope{Tenant: "victim", Subject: "y", OriginNode: "evil"}).MarshalVT()
	nc.Publish("arq.victim.y", good)
	nc.Publish("arq.victim.z", []byte("\xff\xff not protobuf"))
	nc.Flush()
	select {
	case env := <-got:
		if env.Tenant != "victim" || env.Subject != "y" {
			t.Fatalf("delivered %+v", env)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timeout")
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats.DecodeErrors.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := b.Stats.DecodeErrors.Load(); n != 2 {
		t.Fatalf("decode errors %d, want 2 (forged tenant, garbage)", n)
	}
}

func TestWatchRefCount(t *testing.T) {
	_, a, _ := newPair(t)
	a.Watch("t", ">")
	a.Watch("t", ">")
	a.Watch("u", ">")
	if n := a.WatchedTenants(); n != 2 {
		t.Fatalf("watched %d", n)
	}
	a.Unwatch("t", ">")
	if n := a.WatchedTenants(); n != 2 {
		t.Fatalf("watched %d after one unwatch", n)
	}
	a.Unwatch("t", ">")
	a.Unwatch("u", ">")
	a.Unwatch("never", ">")
	a.Unwatch("u", ">") // one too many: ignored
	if n := a.Lingering(); n != 2 {
		t.Fatalf("%d patterns lingering, want 2", n)
	}
	waitFor(t, "the lingering patterns to go", func() bool { return a.WatchedTenants() == 0 && a.Lingering() == 0 })
}

// BenchmarkPublish publishes through an embedded server that another node
// listens on (heard: the envelope is marshalled and handed to NATS) and
// through one nobody else listens on (unheard: skipped after the interest
// check).
func BenchmarkPublish(b *testing.B) {
	for _, heard := range []bool{true, false} {
		b.Run(fmt.Sprintf("heard=%v", heard), func(b *testing.B) {
			s, err := New(Config{NodeID: "bench", EmbeddedListen: "127.0.0.1:0", HeartbeatInterval: testBeat})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if heard {
				other, err := New(Config{URL: s.EmbeddedGatewayURL(), NodeID: "other", HeartbeatInterval: testBeat})
				if err != nil {
					b.Fatal(err)
				}
				defer other.Close()
				other.SetHandler(func(*pb.Envelope) {})
				if err := other.Watch("t1", ">"); err != nil {
					b.Fatal(err)
				}
			}
			waitOpen(b, s)
			env := &pb.Envelope{Tenant: "t1", Subject: "chat.lobby", Payload: make([]byte, 128), Timestamp: 1}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Publish(env); err != nil {
					b.Fatal(err)
				}
			}
			if heard != (s.Stats.Unheard.Load() == 0) {
				b.Fatalf("heard=%v but %d publishes unheard", heard, s.Stats.Unheard.Load())
			}
		})
	}
}

// A publish nobody else listens for is not sent (counted as unheard), also
// when this node itself watches the tenant; once another node watches it,
// publishes reach that node.
func TestUnheardPublishSkipped(t *testing.T) {
	hub, err := New(Config{NodeID: "hub", EmbeddedListen: "127.0.0.1:0", HeartbeatInterval: testBeat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	if err := hub.Watch("t1", ">"); err != nil { // its own interest does not count
		t.Fatal(err)
	}
	waitOpen(t, hub)
	if err := hub.Publish(&pb.Envelope{Tenant: "t1", Subject: "x.1"}); err != nil {
		t.Fatal(err)
	}
	if hub.Stats.Unheard.Load() != 1 || hub.Stats.Published.Load() != 0 {
		t.Fatalf("alone: unheard %d published %d, want 1 and 0", hub.Stats.Unheard.Load(), hub.Stats.Published.Load())
	}
	other, err := New(Config{URL: hub.EmbeddedGatewayURL(), NodeID: "other", HeartbeatInterval: testBeat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	got := make(chan string, 4)
	other.SetHandler(func(env *pb.Envelope) { got <- env.Subject })
	if err := other.Watch("t1", ">"); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, hub)
	if err := hub.Publish(&pb.Envelope{Tenant: "t2", Subject: "y"}); err != nil { // t2: nobody
		t.Fatal(err)
	}
	if err := hub.Publish(&pb.Envelope{Tenant: "t1", Subject: "x.2"}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "x.2" {
			t.Fatalf("other got %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the other node did not get the publish it listens for")
	}
	if hub.Stats.Unheard.Load() != 2 || hub.Stats.Published.Load() != 1 {
		t.Fatalf("unheard %d published %d, want 2 and 1", hub.Stats.Unheard.Load(), hub.Stats.Published.Load())
	}
	other.Unwatch("t1", ">")
	hub.Unwatch("t1", ">")
}

// BenchmarkWatchChurn is a reconnect storm's cost in the spine: goroutines
// in parallel each take a pattern's first Watch and its last Unwatch.
// unique: every iteration a new pattern, removed at once (Linger off): the
// NATS SUB and UNSUB and the interest announcement each time. reuse: 10,000
// patterns in turn with the default Linger, as clients that reconnect to
// their rooms: the subscription is still there.
func BenchmarkWatchChurn(b *testing.B) {
	for _, mode := range []string{"unique", "reuse"} {
		b.Run(mode, func(b *testing.B) {
			cfg := Config{NodeID: "bench", HeartbeatInterval: testBeat}
			if mode == "unique" {
				cfg.Linger = -1
			}
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var next atomic.Int64
			b.SetParallelism(64) // many connections' goroutines at once
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					if mode == "reuse" {
						i %= 10000
					}
					p := "room." + strconv.FormatInt(i, 10)
					if err := s.Watch("t1", p); err != nil {
						b.Error(err)
						return
					}
					s.Unwatch("t1", p)
				}
			})
		})
	}
}
