package spine

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/pb"
)

// testBeat is the interest protocol's heartbeat in tests (1s by default).
const testBeat = 50 * time.Millisecond

// testLinger is the tests' Config.Linger: long enough for a resubscribe
// to land inside it, short enough to watch it end.
const testLinger = 300 * time.Millisecond

// waitOpen waits until s skips publishes nobody listens to (warm, synced).
func waitOpen(tb testing.TB, s *Spine) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !s.Interest().Open; {
		if time.Now().After(deadline) {
			tb.Fatalf("node %s: interest protocol never opened: %+v", s.cfg.NodeID, s.Interest())
		}
		time.Sleep(time.Millisecond)
	}
}

// waitFor polls cond (a failure guard, not a timing assertion).
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// collector records the subjects a node's handler receives.
type collector struct {
	mu  sync.Mutex
	got []string
}

func (c *collector) handler(env *pb.Envelope) {
	c.mu.Lock()
	c.got = append(c.got, env.Subject+"/"+string(env.Payload))
	c.mu.Unlock()
}

func (c *collector) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

// A node receives only the subjects its patterns match, each message once
// however many of its patterns match, in publish order; a publish that
// matches nobody's pattern is not sent.
func TestSubjectInterest(t *testing.T) {
	_, a, b := newPair(t)
	var c collector
	b.SetHandler(c.handler)
	for _, p := range []string{"room.1", "room.*", "room.>", "room.1"} { // overlapping, and one twice
		if err := b.Watch("t1", p); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.Subscriptions(); n != 3 {
		t.Fatalf("b holds %d NATS subscriptions, want 3 (one per distinct pattern)", n)
	}
	waitOpen(t, a)
	const n = 200
	for i := range n {
		if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: "room.1", Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{"lobby", "room", "t2"} { // nobody listens
		if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: s}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: "room.2.x", Payload: []byte("end")}); err != nil { // only room.>
		t.Fatal(err)
	}
	waitFor(t, "the messages at b", func() bool { return len(c.snapshot()) >= n+1 })
	time.Sleep(50 * time.Millisecond) // a duplicate would arrive right behind
	got := c.snapshot()
	if len(got) != n+1 {
		t.Fatalf("b got %d messages, want %d (each once)", len(got), n+1)
	}
	for i := range n {
		if want := "room.1/" + strconv.Itoa(i); got[i] != want {
			t.Fatalf("message %d: %q, want %q", i, got[i], want)
		}
	}
	if got[n] != "room.2.x/end" {
		t.Fatalf("last: %q", got[n])
	}
	if u := a.Stats.Unheard.Load(); u != 3 {
		t.Fatalf("a skipped %d publishes, want 3", u)
	}
	// The last Unwatch of a pattern removes it from NATS and from a's
	// view once it has lingered.
	for _, p := range []string{"room.1", "room.*", "room.>", "room.1"} {
		b.Unwatch("t1", p)
	}
	if n, l := b.Subscriptions(), b.Lingering(); n != 3 || l != 3 {
		t.Fatalf("b holds %d subscriptions, %d lingering, right after unwatching; want 3, 3", n, l)
	}
	waitFor(t, "b's patterns to stop lingering", func() bool { return b.Subscriptions() == 0 })
	waitFor(t, "a to forget b's patterns", func() bool { return a.Interest().Entries == 0 })
	before := a.Stats.Unheard.Load()
	if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: "room.1"}); err != nil {
		t.Fatal(err)
	}
	if a.Stats.Unheard.Load() != before+1 {
		t.Fatal("a still sends room.1 after b stopped listening")
	}
}

// When Watch returns, every node knows: a message published right after it
// is never skipped (repeated over many fresh patterns, each published to
// at once).
func TestInterestKnownWhenWatchReturns(t *testing.T) {
	_, a, b := newPair(t)
	var c collector
	b.SetHandler(c.handler)
	waitOpen(t, a)
	waitOpen(t, b)
	const rooms = 100
	for i := range rooms {
		room := "room." + strconv.Itoa(i)
		if err := b.Watch("t1", room); err != nil {
			t.Fatal(err)
		}
		if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: room, Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every room's message", func() bool { return len(c.snapshot()) >= rooms })
	if u := a.Stats.Unheard.Load(); u != 0 {
		t.Fatalf("a skipped %d publishes that b listened for", u)
	}
	if to := b.Interest().AckTimeouts; to != 0 {
		t.Fatalf("%d acknowledgement timeouts", to)
	}
}

// A node that joins late learns the others' patterns from snapshots (in
// several chunks), and a node that stops is forgotten after the TTL.
func TestInterestSnapshotAndExpiry(t *testing.T) {
	hub, a, _ := newPair(t)
	const patterns = snapChunk*2 + 10
	for i := range patterns {
		if err := a.Watch("t"+strconv.Itoa(i%7), "p."+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	late, err := New(Config{URL: hub.EmbeddedGatewayURL(), NodeID: "late", HeartbeatInterval: testBeat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(late.Close)
	waitFor(t, "late to sync a's patterns", func() bool {
		return late.Interest().Entries == patterns && late.Interest().Open
	})
	if late.Interest().Nodes != 3 {
		t.Fatalf("late knows %d nodes, want 3 (hub, a, b)", late.Interest().Nodes)
	}
	if err := late.Publish(&pb.Envelope{Tenant: "t3", Subject: "p.3"}); err != nil {
		t.Fatal(err)
	}
	if late.Stats.Published.Load() != 1 {
		t.Fatal("late skipped a publish a listens for")
	}
	a.Close()
	waitFor(t, "late to forget a", func() bool {
		st := late.Interest()
		return st.Entries == 0 && st.Nodes == 2 && st.Open
	})
	if err := late.Publish(&pb.Envelope{Tenant: "t3", Subject: "p.3"}); err != nil {
		t.Fatal(err)
	}
	if late.Stats.Unheard.Load() != 1 {
		t.Fatal("late still sends what only a dead node wanted")
	}
}

// In tenant mode a node subscribes once per tenant and gets all its traffic.
func TestTenantInterestMode(t *testing.T) {
	hub, a, _ := newPair(t)
	b, err := New(Config{URL: hub.EmbeddedGatewayURL(), NodeID: "tb", HeartbeatInterval: testBeat, Interest: InterestTenant, Linger: testLinger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	var c collector
	b.SetHandler(c.handler)
	for _, p := range []string{"room.1", "room.2"} {
		if err := b.Watch("t1", p); err != nil {
			t.Fatal(err)
		}
	}
	if n := b.Subscriptions(); n != 1 {
		t.Fatalf("%d subscriptions in tenant mode, want 1", n)
	}
	waitOpen(t, a)
	if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: "other"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the tenant's message", func() bool { return len(c.snapshot()) == 1 })
	b.Unwatch("t1", "room.1")
	if n := b.Subscriptions(); n != 1 {
		t.Fatal("tenant subscription dropped while a pattern remains")
	}
	b.Unwatch("t1", "room.2")
	if n := b.Lingering(); n != 1 {
		t.Fatalf("%d lingering after the last pattern, want the tenant's 1", n)
	}
	waitFor(t, "the tenant subscription to go", func() bool { return b.Subscriptions() == 0 })
	if _, err := New(Config{Interest: "bogus"}); err == nil {
		t.Fatal("an unknown interest mode was accepted")
	}
}

// A single node on an embedded server that does not listen skips at once:
// no other node can exist.
func TestAloneSkipsAtOnce(t *testing.T) {
	s, err := New(Config{NodeID: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Watch("t1", "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(&pb.Envelope{Tenant: "t1", Subject: "x"}); err != nil {
		t.Fatal(err)
	}
	if s.Stats.Unheard.Load() != 1 {
		t.Fatal("a lone embedded node sent a publish")
	}
}

func TestDecodeInterestMsg(t *testing.T) {
	good := `{"t":"add","n":"a","e":"E","v":3,"i":[["acme","room.*"]]}`
	m, err := decodeInterestMsg([]byte(good))
	if err != nil || m.Version != 3 || m.Entries[0] != [2]string{"acme", "room.*"} {
		t.Fatalf("%+v %v", m, err)
	}
	for _, bad := range []string{
		``, `{`, `{"t":"x","n":"a","e":"E"}`, `{"t":"hb","e":"E"}`, `{"t":"hb","n":"a"}`,
		`{"t":"add","n":"a","e":"E","i":[["","x"]]}`, `{"t":"add","n":"a","e":"E","i":[["a.b","x"]]}`,
		`{"t":"add","n":"a","e":"E","i":[["a","x..y"]]}`, `{"t":"add","n":"a","e":"E","i":[["a",">.x"]]}`,
	} {
		if _, err := decodeInterestMsg([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzDecodeInterestMsg(f *testing.F) {
	f.Add([]byte(`{"t":"add","n":"a","e":"E","v":3,"i":[["acme","room.*"]]}`))
	f.Add([]byte(`{"t":"snap","n":"a","e":"E","v":1,"m":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeInterestMsg(data)
		if err != nil {
			return
		}
		if m.Node == "" || m.Epoch == "" {
			t.Fatalf("accepted without node or epoch: %q", data)
		}
	})
}

// BenchmarkMayReach is the check on every publish: a tenant with 1,000
// remote patterns, a subject that matches one and one that matches none.
func BenchmarkMayReach(b *testing.B) {
	s, err := New(Config{NodeID: "solo"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	in := s.interest
	n := &remoteNode{entries: make(map[entryKey]struct{})}
	for i := range 1000 {
		in.insert("other", n, entryKey{"t1", "room." + strconv.Itoa(i)})
	}
	for _, subj := range []string{"room.500", "lobby.1"} {
		b.Run(subj, func(b *testing.B) {
			b.ReportAllocs()
			want := subj == "room.500"
			for b.Loop() {
				if in.mayReach("t1", subj) != want {
					b.Fatal(fmt.Sprint("wrong answer for ", subj))
				}
			}
		})
	}
}

// A node that restarts under the same id (a new epoch) replaces what the
// others knew of its previous life as soon as they have its snapshot, not
// after the TTL.
func TestInterestNodeRestartSameID(t *testing.T) {
	hub, a, _ := newPair(t)
	cfg := Config{URL: hub.EmbeddedGatewayURL(), NodeID: "c", HeartbeatInterval: testBeat, InterestTTL: time.Hour}
	c1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Watch("t1", "old.room"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to learn old.room", func() bool { return a.Interest().Entries == 1 })
	c1.Close()
	c2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Close)
	if err := c2.Watch("t1", "new.room"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to replace c's patterns", func() bool {
		return a.Interest().Entries == 1 && a.Interest().Open && len(a.interest.remote.Match("t1", "new.room")) == 1
	})
	if n := len(a.interest.remote.Match("t1", "old.room")); n != 0 {
		t.Fatal("a still counts c's pattern from before its restart")
	}
}

// A peer speaking the protocol by hand over a real NATS connection: a gap
// in its versions makes the node ask for a snapshot, which replaces what
// it knew (with the deltas that came meanwhile on top); removals count
// only in order; while the snapshot is awaited everything is sent.
func TestInterestGapResync(t *testing.T) {
	hub, a, _ := newPair(t)
	waitOpen(t, a)
	peer, err := nats.Connect(hub.EmbeddedGatewayURL())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	send := func(m interestMsg) {
		t.Helper()
		m.Node, m.Epoch = "peer", "E1"
		data, _ := json.Marshal(m)
		if err := peer.Publish("arq.$spine.interest", data); err != nil {
			t.Fatal(err)
		}
		_ = peer.Flush()
	}
	knows := func(subj string) bool { return len(a.interest.remote.Match("t1", subj)) > 0 }
	// The peer answers snapshot requests (from every node: hub, a, b) with
	// its state of the moment, unless held.
	var mu sync.Mutex
	held, hold := []string(nil), false
	state := interestMsg{Type: msgSnap, Node: "peer", Epoch: "E1", Version: 1, Entries: [][2]string{{"t1", "p.1"}}}
	answer := func(reply string) {
		data, _ := json.Marshal(state)
		_ = peer.Publish(reply, data)
	}
	if _, err := peer.Subscribe("arq.$spine.snap.peer", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if hold {
			held = append(held, m.Reply)
			return
		}
		answer(m.Reply)
	}); err != nil {
		t.Fatal(err)
	}
	// First contact: a asks for a snapshot (version 1: p.1).
	send(interestMsg{Type: msgHeartbeat, Version: 1})
	waitFor(t, "a to learn p.1", func() bool { return knows("p.1") && a.Interest().Open })

	// v2 (it added p.2) is lost; v3 (adds p.3) arrives: applied at once,
	// and a asks for a snapshot, which the peer holds back.
	mu.Lock()
	hold = true
	state.Version, state.Entries = 3, [][2]string{{"t1", "p.1"}, {"t1", "p.2"}, {"t1", "p.3"}}
	mu.Unlock()
	send(interestMsg{Type: msgAdd, Version: 3, Entries: [][2]string{{"t1", "p.3"}}})
	waitFor(t, "p.3 applied before the snapshot", func() bool { return knows("p.3") })
	// While the snapshot is held, a sends everything (never open).
	waitFor(t, "a to send everything while it waits", func() bool { return !a.Interest().Open })
	// v4 removes p.1 while the snapshot (version 3) is on its way.
	send(interestMsg{Type: msgDel, Version: 4, Entries: [][2]string{{"t1", "p.1"}}})
	mu.Lock()
	for _, r := range held {
		answer(r)
	}
	hold, held = false, nil
	state.Version, state.Entries = 4, [][2]string{{"t1", "p.2"}, {"t1", "p.3"}}
	mu.Unlock()
	waitFor(t, "a to apply snapshot and delta", func() bool {
		return a.Interest().Open && !knows("p.1") && knows("p.2") && knows("p.3")
	})
	if n := a.Interest().Entries; n != 2 {
		t.Fatalf("a knows %d entries, want 2 (p.2, p.3)", n)
	}
	// A bad message is counted and changes nothing.
	before := a.Interest().DecodeErrors
	_ = peer.Publish("arq.$spine.interest", []byte(`{"t":"add","n":"peer","e":"E1","v":5,"i":[["t1","a..b"]]}`))
	_ = peer.Flush()
	waitFor(t, "the bad message counted", func() bool { return a.Interest().DecodeErrors == before+1 })
	if n := a.Interest().Entries; n != 2 {
		t.Fatalf("a bad message changed the table: %d entries", n)
	}
}

// A pattern whose last subscriber leaves lingers: a resubscribe inside
// Config.Linger reuses its NATS subscription, announces nothing and sees
// the messages published meanwhile and after; one that stays unused is
// removed from NATS and from the other nodes' view.
func TestLingerReuse(t *testing.T) {
	_, a, b := newPair(t)
	var c collector
	b.SetHandler(c.handler)
	if err := b.Watch("t1", "room.1"); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, a)
	b.interest.mu.Lock()
	v0 := b.interest.version
	b.interest.mu.Unlock()
	b.Unwatch("t1", "room.1")
	if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: "room.1", Payload: []byte("meanwhile")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Watch("t1", "room.1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: "room.1", Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both messages", func() bool { return len(c.snapshot()) == 2 })
	if got := c.snapshot(); got[0] != "room.1/meanwhile" || got[1] != "room.1/after" {
		t.Fatalf("got %q", got)
	}
	time.Sleep(2 * testLinger) // past the linger: still in use, so kept
	b.interest.mu.Lock()
	v1 := b.interest.version
	b.interest.mu.Unlock()
	if v1 != v0 || b.Subscriptions() != 1 || b.Lingering() != 0 {
		t.Fatalf("after a resubscribe inside the linger: version %d -> %d, %d subscriptions, %d lingering; want no change, 1, 0",
			v0, v1, b.Subscriptions(), b.Lingering())
	}
	if u := a.Stats.Unheard.Load(); u != 0 {
		t.Fatalf("a skipped %d publishes", u)
	}
	b.Unwatch("t1", "room.1")
	waitFor(t, "a to forget the pattern", func() bool { return a.Interest().Entries == 0 })
	if n := b.Subscriptions(); n != 0 {
		t.Fatalf("%d subscriptions after the linger", n)
	}
}
