package brain

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/internal/spinetest"
	"github.com/arqonbus/arqonbus/pb"
)

// BenchmarkBrainApply is the brain's throughput from the wire: one
// gateway node's stream (numbered pb.PresenceBatch, as a gateway sends
// it) published on NATS, applied by a Brain to the store and published
// back as events, which a subscriber on "arq.$presence.>" (standing in for
// the gateways) counts. Half of the b.N ops are joins of new members over
// 100 rooms, then their leaves; the time runs from the first publish to
// the last event received. ops/s counts joins + leaves.
//
//	go test -run '^$' -bench BenchmarkBrainApply -count 6 ./brain/
func BenchmarkBrainApply(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		for _, ops := range []int{16, 512} {
			b.Run(fmt.Sprint("batch=", ops), func(b *testing.B) { benchBrainApply(b, s, ops) })
		}
	})
}

var benchNode atomic.Int64

func benchBrainApply(b *testing.B, s Store, ops int) {
	url := spinetest.NATS(b)
	bnc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer bnc.Close()
	br, err := New(Config{Conn: bnc, Store: s, NodeTTL: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	enc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	var events atomic.Int64
	esub, err := enc.Subscribe("arq.$presence.>", func(*nats.Msg) { events.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	_ = esub.SetPendingLimits(-1, -1)
	if err := enc.Flush(); err != nil {
		b.Fatal(err)
	}
	pnc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer pnc.Close()

	node := fmt.Sprint("bench-", benchNode.Add(1))
	epoch := uint64(time.Now().UnixNano())
	members := max(b.N/2, 1)
	// Encode every batch first: the clock measures the brain, not this.
	var msgs [][]byte
	seq := uint64(0)
	for _, leave := range []bool{false, true} {
		for i := 0; i < members; i += ops {
			seq++
			bt := benchBatch(node, seq, i, min(ops, members-i), 100, leave)
			pbb := &pb.PresenceBatch{Node: node, Epoch: epoch, Seq: seq}
			for _, op := range bt.Ops {
				pbb.Ops = append(pbb.Ops, &pb.PresenceOp{Leave: op.Leave, Reason: op.Reason, Tenant: op.Member.Tenant,
					Subject: op.Member.Subject, Session: op.Member.Session, User: op.Member.User, JoinedAt: op.Member.JoinedAt})
			}
			data, err := pbb.MarshalVT()
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, data)
		}
	}
	subj := "arq.$brain.node." + node
	want := int64(2 * members)
	b.ReportAllocs()
	b.ResetTimer()
	for _, m := range msgs {
		if err := pnc.Publish(subj, m); err != nil {
			b.Fatal(err)
		}
	}
	if err := pnc.Flush(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(2*time.Minute + time.Duration(members)*50*time.Microsecond)
	for events.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d events", events.Load(), want)
		}
		time.Sleep(200 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "ops/s")
}
