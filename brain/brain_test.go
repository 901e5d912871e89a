package brain

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/arqonbus/arqonbus/internal/spinetest"
	"github.com/arqonbus/arqonbus/pb"
)

// TestBrainMergedStream: a node's stream published at once (300 batches:
// joins, then the leaves of every other member, each leave batches after
// its joins) is applied whatever the brain merges: every join and leave
// published exactly once, the room as the stream left it, no snapshot
// asked for.
func TestBrainMergedStream(t *testing.T) {
	url := spinetest.NATS(t)
	bnc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer bnc.Close()
	s := NewMemoryStore()
	defer s.Close()
	br, err := New(Config{Conn: bnc, Store: s, NodeTTL: time.Minute, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	enc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var joins, leaves atomic.Int64
	esub, err := enc.Subscribe("arq.$presence.>", func(m *nats.Msg) {
		var ev pb.PresenceEvent
		if err := ev.UnmarshalVT(m.Data); err != nil {
			t.Error(err)
		}
		if ev.Leave {
			leaves.Add(1)
		} else {
			joins.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = esub.SetPendingLimits(-1, -1)
	syncs, err := enc.SubscribeSync("arq.$brain.sync.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	const batches, per = 300, 5
	epoch := uint64(time.Now().UnixNano())
	for seq := uint64(1); seq <= batches; seq++ {
		pbb := &pb.PresenceBatch{Node: "n1", Epoch: epoch, Seq: seq}
		for i := range per {
			k := int(seq-1)*per + i
			pbb.Ops = append(pbb.Ops, &pb.PresenceOp{Tenant: "acme", Subject: "room", Session: session(k), User: "u"})
			if seq > 10 && k%2 == 0 { // an earlier batch's member leaves
				pbb.Ops = append(pbb.Ops, &pb.PresenceOp{Leave: true, Reason: "closed", Tenant: "acme", Subject: "room", Session: session(k - 10*per)})
			}
		}
		data, _ := pbb.MarshalVT()
		if err := enc.Publish("arq.$brain.node.n1", data); err != nil {
			t.Fatal(err)
		}
	}
	wantLeaves := int64(0)
	for k := 0; k < (batches-10)*per; k += 2 {
		wantLeaves++
	}
	deadline := time.Now().Add(20 * time.Second)
	for joins.Load() < batches*per || leaves.Load() < wantLeaves {
		if time.Now().After(deadline) {
			t.Fatalf("%d joins, %d leaves", joins.Load(), leaves.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // anything extra would arrive now
	if joins.Load() != batches*per || leaves.Load() != wantLeaves {
		t.Fatalf("%d joins, %d leaves; want %d and %d", joins.Load(), leaves.Load(), batches*per, wantLeaves)
	}
	m, _, err := s.Count(bg, "acme", "room")
	if err != nil || int64(m) != batches*per-wantLeaves {
		t.Fatalf("%d members (%v), want %d", m, err, batches*per-wantLeaves)
	}
	if msg, err := syncs.NextMsg(10 * time.Millisecond); err == nil {
		t.Fatalf("a snapshot was asked: %q", msg.Subject)
	}
	t.Logf("%v of %d batches merged into an earlier one's call", testutil.ToFloat64(br.m.merged), batches)
}

// TestBrainInvalidBatchInRun: an invalid batch does not take the valid
// batches merged with it down: batch 1 applies, 2 is refused, 3 is then
// a gap (a snapshot is asked), however the three were merged.
func TestBrainInvalidBatchInRun(t *testing.T) {
	url := spinetest.NATS(t)
	bnc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer bnc.Close()
	s := NewMemoryStore()
	defer s.Close()
	br, err := New(Config{Conn: bnc, Store: s, NodeTTL: time.Minute, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	enc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	syncs, err := enc.SubscribeSync("arq.$brain.sync.n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	epoch := uint64(time.Now().UnixNano())
	for seq, sess := range []string{"a", "", "c"} { // "": no session, invalid
		pbb := &pb.PresenceBatch{Node: "n1", Epoch: epoch, Seq: uint64(seq + 1),
			Ops: []*pb.PresenceOp{{Tenant: "acme", Subject: "room", Session: sess, User: "u"}}}
		data, _ := pbb.MarshalVT()
		if err := enc.Publish("arq.$brain.node.n1", data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := syncs.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no snapshot asked: %v", err)
	}
	ms, _, err := s.Members(bg, "acme", "room", "", 10)
	if err != nil || len(ms) != 1 || ms[0].Session != "a" {
		t.Fatalf("members %+v (%v), want a only", ms, err)
	}
	if n := testutil.ToFloat64(br.m.errors.WithLabelValues("invalid_batch")); n != 1 {
		t.Fatalf("%v invalid batches counted", n)
	}
}
