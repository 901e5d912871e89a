package brain

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/arqonbus/arqonbus/internal/valkeytest"
)

// benchStores runs f against a fresh MemoryStore and a fresh ValkeyStore
// (on a private server).
func benchStores(b *testing.B, f func(b *testing.B, s Store)) {
	b.Run("store=memory", func(b *testing.B) {
		s := NewMemoryStore()
		defer s.Close()
		f(b, s)
	})
	b.Run("store=valkey", func(b *testing.B) {
		srv := valkeytest.Start(b)
		s, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		f(b, s)
	})
}

// session returns a 22-character session id like the gateway's nuids.
func session(i int) string { return fmt.Sprintf("S%021d", i) }

func benchBatch(node string, seq uint64, first, n, rooms int, leave bool) *Batch {
	b := &Batch{Node: node, Epoch: 1, Seq: seq, Ops: make([]Op, 0, n)}
	for i := first; i < first+n; i++ {
		room := fmt.Sprint("room.", i%rooms)
		if leave {
			b.Ops = append(b.Ops, Op{Leave: true, Member: Member{Tenant: "acme", Subject: room, Session: session(i)}, Reason: "closed"})
		} else {
			b.Ops = append(b.Ops, join(Member{Tenant: "acme", Subject: room, Session: session(i),
				User: fmt.Sprintf("user-%07d", i), JoinedAt: 1700000000000 + int64(i)}))
		}
	}
	return b
}

// BenchmarkStoreApply: 64-op batches of joins, then of leaves of those
// members, over 100 rooms; ops/s counts ops, not batches.
func BenchmarkStoreApply(b *testing.B) {
	const ops = 64
	benchStores(b, func(b *testing.B, s Store) {
		// Runs of a sub-benchmark (b.N growing) continue seq and sessions.
		seq, next := uint64(0), 0
		b.Run("op=join", func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				seq++
				next += ops
				r, err := s.Apply(bg, benchBatch("n0", seq, next, ops, 100, false))
				if err != nil || r.Status != Applied || len(r.Joined) != ops {
					b.Fatal(r.Status, err)
				}
			}
			b.ReportMetric(float64(b.N*ops)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run("op=leave", func(b *testing.B) {
			first := next + ops // members of their own, joined first
			for i := 0; i < b.N; i++ {
				seq++
				next += ops
				if _, err := s.Apply(bg, benchBatch("n0", seq, first+i*ops, ops, 100, false)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seq++
				r, err := s.Apply(bg, benchBatch("n0", seq, first+i*ops, ops, 100, true))
				if err != nil || r.Status != Applied || len(r.Left) != ops {
					b.Fatal(r.Status, err)
				}
			}
			b.ReportMetric(float64(b.N*ops)/b.Elapsed().Seconds(), "ops/s")
		})
	})
}

// fillRoom joins n members to (acme, room.0) from node n9 in 512-op
// batches.
func fillRoom(b *testing.B, s Store, n int) {
	seq := uint64(0)
	for i := 0; i < n; i += 512 {
		seq++
		if _, err := s.Apply(bg, benchBatch("n9", seq, i, min(512, n-i), 1, false)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStoreMembers: a page of 1000 from a 10k-member room, starting
// at each of the ten page boundaries in turn.
func BenchmarkStoreMembers(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		const n = 10000
		fillRoom(b, s, n)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			cursor := ""
			if p := i % 10; p > 0 {
				cursor = session(p*1000 - 1)
			}
			ms, _, err := s.Members(bg, "acme", "room.0", cursor, 1000)
			if err != nil || len(ms) != 1000 {
				b.Fatal(len(ms), err)
			}
		}
	})
}

// BenchmarkStoreCount: Count of a 10k-member room.
func BenchmarkStoreCount(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		fillRoom(b, s, 10000)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			m, u, err := s.Count(bg, "acme", "room.0")
			if err != nil || m != 10000 || u != 10000 {
				b.Fatal(m, u, err)
			}
		}
	})
}

// BenchmarkValkeyMemory measures Valkey's used_memory per member: 100k
// members (22-byte sessions, 12-byte users, one user each, no info, 4
// nodes) in 1, 100 or 1000 rooms, joined in 512-op batches. Run it once:
//
//	go test -run '^$' -bench BenchmarkValkeyMemory -benchtime 1x ./brain/
func BenchmarkValkeyMemory(b *testing.B) {
	const members = 100000
	for _, rooms := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint("rooms=", rooms), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				srv := valkeytest.Start(b)
				s, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr()})
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Ping(bg); err != nil {
					b.Fatal(err)
				}
				before, err := srv.InfoMemoryUsed()
				if err != nil {
					b.Fatal(err)
				}
				var seq [4]uint64
				for j := 0; j < members; j += 512 {
					n := j / 512 % 4
					seq[n]++
					r, err := s.Apply(bg, benchBatch(fmt.Sprint("node-", n), seq[n], j, min(512, members-j), rooms, false))
					if err != nil || r.Status != Applied {
						b.Fatal(r.Status, err)
					}
				}
				after, err := srv.InfoMemoryUsed()
				if err != nil {
					b.Fatal(err)
				}
				if m, _, _ := s.Count(bg, "acme", "room.0"); m != members/rooms {
					b.Fatalf("room.0 has %d members", m)
				}
				b.ReportMetric(float64(after-before)/members, "bytes/member")
				s.Close()
				srv.Stop()
			}
		})
	}
}

// BenchmarkValkeyApplyCPU is Valkey's own CPU per op (INFO cpu, user +
// system, before and after) for 512-op batches of joins and then of the
// leaves of those members, one op per member: rooms=1 grows one room to
// 20,480 members, rooms=100 spreads them over 100 rooms, rooms=100000
// gives nearly every member a room of its own (a key created by each
// join, deleted by each leave). Unlike the wall time, this is what the
// scripts cost Valkey, whatever else the machine runs.
//
//	go test -run '^$' -bench BenchmarkValkeyApplyCPU -benchtime 40x ./brain/
func BenchmarkValkeyApplyCPU(b *testing.B) {
	for _, rooms := range []int{1, 100, 100000} {
		b.Run(fmt.Sprint("rooms=", rooms), func(b *testing.B) {
			srv := valkeytest.Start(b)
			s, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const ops = 512
			seq := uint64(0)
			var join, leave float64
			for _, lv := range []bool{false, true} {
				c0 := valkeyCPU(b, s)
				for i := 0; i < b.N; i++ {
					seq++
					r, err := s.Apply(bg, benchBatch("n0", seq, i*ops, ops, rooms, lv))
					if err != nil || r.Status != Applied {
						b.Fatal(r.Status, err)
					}
				}
				us := (valkeyCPU(b, s) - c0) * 1e6 / float64(b.N*ops)
				if lv {
					leave = us
				} else {
					join = us
				}
			}
			b.ReportMetric(join, "join_cpu_us/op")
			b.ReportMetric(leave, "leave_cpu_us/op")
		})
	}
}

// valkeyCPU returns the server's used_cpu_user + used_cpu_sys, seconds.
func valkeyCPU(b *testing.B, s *ValkeyStore) float64 {
	info, err := s.client.Do(bg, s.client.B().Info().Section("cpu").Build()).ToString()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, l := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			sum += f
		}
	}
	return sum
}
