package brain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/valkeytest"
)

// The contract suite: every Store implementation runs it (TestMemoryStore,
// TestValkeyStore). newStore returns a fresh, empty store; peerOf returns
// a second client of the same data (the store itself for MemoryStore).

func TestMemoryStore(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		s := NewMemoryStore()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// peerOf returns another client of s's data, closed at the end of t.
func peerOf(t *testing.T, s Store) Store {
	switch s := s.(type) {
	case *MemoryStore:
		return s
	case interface{ peer(t *testing.T) Store }:
		return s.peer(t)
	}
	t.Fatalf("peerOf: unknown store %T", s)
	return nil
}

func TestValkeyStore(t *testing.T) {
	srv := valkeytest.Start(t)
	n := 0
	testStore(t, func(t *testing.T) Store {
		n++ // a prefix per test: they share the server
		s, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr(), Prefix: fmt.Sprint("t", n)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// The Valkey store keeps a room's users only while the room is big: from
// past 128 members until 64 or fewer are left (layout 3).
func TestValkeyTracksBigRoomsOnly(t *testing.T) {
	srv := valkeytest.Start(t)
	s, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tracked := func() bool {
		n, err := s.client.Do(bg, s.client.B().Exists().Key("arqp3:{t}:ub:r", "arqp3:{t}:u:r").Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	seq := uint64(0)
	step := func(from, to int, leaving bool) {
		var ops []Op
		for i := from; i < to; i++ {
			if leaving {
				ops = append(ops, leave("t", "r", fmt.Sprint("s", i), "closed"))
			} else {
				ops = append(ops, join(mem("t", "r", fmt.Sprint("s", i), fmt.Sprint("u", i))))
			}
		}
		seq++
		apply(t, s, &Batch{Node: "n", Epoch: 1, Seq: seq, Ops: ops})
	}
	step(0, 128, false)
	if tracked() {
		t.Fatal("users kept for a room of 128")
	}
	step(128, 129, false)
	if !tracked() {
		t.Fatal("users not kept for a room of 129")
	}
	step(0, 64, true) // 65 left
	if !tracked() {
		t.Fatal("users dropped at 65 members")
	}
	step(64, 65, true)
	if tracked() {
		t.Fatal("users kept at 64 members")
	}
	wantCount(t, s, "t", "r", 64, 64)
}

func (s *ValkeyStore) peer(t *testing.T) Store {
	p, err := NewValkeyStore(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func testStore(t *testing.T, newStore func(t *testing.T) Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s Store)
	}{
		{"JoinLeave", testJoinLeave},
		{"Overwrite", testOverwrite},
		{"Duplicate", testDuplicate},
		{"DuplicateConcurrent", testDuplicateConcurrent},
		{"Gap", testGap},
		{"Merged", testMerged},
		{"StaleEpoch", testStaleEpoch},
		{"EpochChanged", testEpochChanged},
		{"Sync", testSync},
		{"SyncSuperseded", testSyncSuperseded},
		{"TenantIsolation", testTenantIsolation},
		{"CountUsers", testCountUsers},
		{"CountUsersLarge", testCountUsersLarge},
		{"CountUsersThreshold", testCountUsersThreshold},
		{"Paging", testPaging},
		{"PagingConcurrentJoins", testPagingConcurrentJoins},
		{"RemoveNodeConcurrent", testRemoveNodeConcurrent},
		{"Invalid", testInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newStore(t)) })
	}
}

var bg = context.Background()

func mem(tenant, subject, session, user string) Member {
	return Member{Tenant: tenant, Subject: subject, Session: session, User: user, JoinedAt: 1700000000000}
}

func join(m Member) Op { return Op{Member: m} }

func leave(tenant, subject, session, reason string) Op {
	return Op{Leave: true, Member: Member{Tenant: tenant, Subject: subject, Session: session}, Reason: reason}
}

func apply(t *testing.T, s Store, b *Batch) Result {
	t.Helper()
	r, err := s.Apply(bg, b)
	if err != nil {
		t.Fatalf("Apply(seq %d sync %d): %v", b.Seq, b.Sync, err)
	}
	return r
}

func wantStatus(t *testing.T, r Result, want BatchStatus) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %v, want %v", r.Status, want)
	}
}

func sessions(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Session
	}
	sort.Strings(out)
	return out
}

func eq(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func wantSessions(t *testing.T, what string, got []Member, want ...string) {
	t.Helper()
	sort.Strings(want)
	if g := sessions(got); !eq(g, want) && !(len(g) == 0 && len(want) == 0) {
		t.Fatalf("%s: %v, want %v", what, g, want)
	}
}

func allMembers(t *testing.T, s Store, tenant, subject string) []Member {
	t.Helper()
	var out []Member
	cursor := ""
	for {
		page, next, err := s.Members(bg, tenant, subject, cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		cursor = next
	}
}

func wantCount(t *testing.T, s Store, tenant, subject string, members, users int) {
	t.Helper()
	m, u, err := s.Count(bg, tenant, subject)
	if err != nil {
		t.Fatal(err)
	}
	if m != members || u != users {
		t.Fatalf("Count(%s, %s) = %d members %d users, want %d %d", tenant, subject, m, u, members, users)
	}
}

func testJoinLeave(t *testing.T, s Store) {
	a := mem("t1", "chat", "s1", "alice")
	a.Info = []byte(`{"name":"Alice"}`)
	b := mem("t1", "chat", "s2", "bob")
	r := apply(t, s, &Batch{Node: "n1", Epoch: 10, Seq: 1, Ops: []Op{join(a), join(b)}})
	wantStatus(t, r, Applied)
	wantSessions(t, "joined", r.Joined, "s1", "s2")
	if len(r.Left) != 0 {
		t.Fatalf("left %v", r.Left)
	}
	got := allMembers(t, s, "t1", "chat")
	want := a
	want.Node, want.Epoch = "n1", 10
	if len(got) != 2 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Fatalf("members %+v, want first %+v", got, want)
	}
	if got[1].Info != nil {
		t.Fatalf("empty info read back as %q, want nil", got[1].Info)
	}
	wantCount(t, s, "t1", "chat", 2, 2)

	// Leave one, leave an absent one, join and leave in one batch.
	c := mem("t1", "chat", "s3", "carol")
	r = apply(t, s, &Batch{Node: "n1", Epoch: 10, Seq: 2, Ops: []Op{
		leave("t1", "chat", "s1", "unsubscribe"),
		leave("t1", "chat", "nope", "unsubscribe"),
		join(c),
		leave("t1", "chat", "s3", "closed"),
	}})
	wantStatus(t, r, Applied)
	wantSessions(t, "joined", r.Joined, "s3")
	if len(r.Left) != 2 || r.Left[0].Session != "s1" || r.Left[1].Session != "s3" ||
		fmt.Sprint(r.LeftReasons) != "[unsubscribe closed]" {
		t.Fatalf("left %+v reasons %v", r.Left, r.LeftReasons)
	}
	if string(r.Left[0].Info) != `{"name":"Alice"}` || r.Left[0].User != "alice" || r.Left[0].Node != "n1" || r.Left[0].Epoch != 10 {
		t.Fatalf("left member without its data: %+v", r.Left[0])
	}
	wantCount(t, s, "t1", "chat", 1, 1)
	// A leave from another node of n1's member is not n1's: nothing.
	r = apply(t, s, &Batch{Node: "n2", Epoch: 5, Seq: 1, Ops: []Op{leave("t1", "chat", "s2", "x")}})
	wantStatus(t, r, Applied)
	if len(r.Left) != 0 {
		t.Fatalf("n2 removed n1's member: %+v", r.Left)
	}
	nodes, err := s.Nodes(bg)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(nodes) != "[{n1 10 2 1} {n2 5 1 0}]" {
		t.Fatalf("nodes %v", nodes)
	}
	if err := s.Ping(bg); err != nil {
		t.Fatal(err)
	}
	// The last leave empties the room.
	apply(t, s, &Batch{Node: "n1", Epoch: 10, Seq: 3, Ops: []Op{leave("t1", "chat", "s2", "closed")}})
	wantCount(t, s, "t1", "chat", 0, 0)
	if ms := allMembers(t, s, "t1", "chat"); len(ms) != 0 {
		t.Fatalf("members of an empty room: %v", ms)
	}
}

func testOverwrite(t *testing.T, s Store) {
	a := mem("t", "r", "s1", "alice")
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{join(a)}})
	a2 := a
	a2.User, a2.Info, a2.JoinedAt = "alice2", []byte(`{}`), 5
	r := apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 2, Ops: []Op{join(a2)}})
	if len(r.Joined) != 0 {
		t.Fatalf("overwrite reported as a join: %v", r.Joined)
	}
	ms := allMembers(t, s, "t", "r")
	if len(ms) != 1 || ms[0].User != "alice2" || string(ms[0].Info) != "{}" || ms[0].JoinedAt != 5 {
		t.Fatalf("members %+v", ms)
	}
	wantCount(t, s, "t", "r", 1, 1)
	r = apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 3, Ops: []Op{leave("t", "r", "s1", "x")}})
	if len(r.Left) != 1 || r.Left[0].User != "alice2" {
		t.Fatalf("left %+v", r.Left)
	}
	wantCount(t, s, "t", "r", 0, 0)
}

func testDuplicate(t *testing.T, s Store) {
	b1 := &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "s1", "u"))}}
	wantStatus(t, apply(t, s, b1), Applied)
	r := apply(t, s, b1)
	wantStatus(t, r, Duplicate)
	if len(r.Joined)+len(r.Left) != 0 {
		t.Fatalf("duplicate reported changes: %+v", r)
	}
	wantCount(t, s, "t", "r", 1, 1)
}

// testDuplicateConcurrent: two clients apply the same batches at once:
// exactly one gets Applied (and the joins) for each.
func testDuplicateConcurrent(t *testing.T, s Store) {
	p := peerOf(t, s)
	const batches = 50
	var joined [2]int
	var applied [2]int
	var wg sync.WaitGroup
	for w, st := range []Store{s, p} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); seq <= batches; seq++ {
				b := &Batch{Node: "n1", Epoch: 7, Seq: seq}
				for i := range 4 {
					b.Ops = append(b.Ops, join(mem("t", "r", fmt.Sprintf("s%03d-%d", seq, i), "u")))
				}
				for {
					r, err := st.Apply(bg, b)
					if err != nil {
						t.Error(err)
						return
					}
					if r.Status == Gap { // the other client has not applied seq-1 yet
						continue
					}
					if r.Status == Applied {
						applied[w]++
						joined[w] += len(r.Joined)
					} else if r.Status != Duplicate {
						t.Errorf("status %v", r.Status)
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	if applied[0]+applied[1] != batches || joined[0]+joined[1] != 4*batches {
		t.Fatalf("applied %v joined %v, want %d and %d in total", applied, joined, batches, 4*batches)
	}
	wantCount(t, s, "t", "r", 4*batches, 1)
}

func testGap(t *testing.T, s Store) {
	r := apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 5, Ops: []Op{join(mem("t", "r", "s1", "u"))}})
	wantStatus(t, r, Gap)
	wantCount(t, s, "t", "r", 0, 0)
	nodes, _ := s.Nodes(bg)
	if fmt.Sprint(nodes) != "[{n1 1 0 0}]" {
		t.Fatalf("nodes %v", nodes)
	}
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1}), Applied)
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 3}), Gap)
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 2}), Applied)
}

// testMerged: consecutive batches merged into one Batch (From..Seq) apply
// as they would one by one: the parts already applied are skipped.
func testMerged(t *testing.T, s Store) {
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "a", "ua"))}})
	// seq 1 (applied above), 2: b joins, 3: a leaves and c joins.
	m := &Batch{Node: "n1", Epoch: 1, From: 1, Seq: 3, Ends: []int{1, 2, 4}, Ops: []Op{
		join(mem("t", "r", "a", "ua")),
		join(mem("t", "r", "b", "ub")),
		leave("t", "r", "a", "closed"), join(mem("t", "r", "c", "uc")),
	}}
	r := apply(t, s, m)
	wantStatus(t, r, Applied)
	wantSessions(t, "joined", r.Joined, "b", "c")
	wantSessions(t, "left", r.Left, "a")
	if fmt.Sprint(r.LeftReasons) != "[closed]" {
		t.Fatalf("reasons %v", r.LeftReasons)
	}
	wantSessions(t, "room", allMembers(t, s, "t", "r"), "b", "c")
	wantStatus(t, apply(t, s, m), Duplicate)
	// 3 (applied) and 4: only 4's leave of b applies.
	r = apply(t, s, &Batch{Node: "n1", Epoch: 1, From: 3, Seq: 4, Ends: []int{1, 2}, Ops: []Op{
		leave("t", "r", "c", "closed"), leave("t", "r", "b", "reset")}})
	wantStatus(t, r, Applied)
	wantSessions(t, "left", r.Left, "b")
	wantSessions(t, "room", allMembers(t, s, "t", "r"), "c")
	// 6..7 after 4: a gap, nothing applied.
	r = apply(t, s, &Batch{Node: "n1", Epoch: 1, From: 6, Seq: 7, Ends: []int{1, 1}, Ops: []Op{join(mem("t", "r", "d", "ud"))}})
	wantStatus(t, r, Gap)
	// 5..6, 5 empty.
	r = apply(t, s, &Batch{Node: "n1", Epoch: 1, From: 5, Seq: 6, Ends: []int{0, 1}, Ops: []Op{join(mem("t", "r", "d", "ud"))}})
	wantStatus(t, r, Applied)
	wantSessions(t, "joined", r.Joined, "d")
	wantCount(t, s, "t", "r", 2, 2)
	nodes, _ := s.Nodes(bg)
	if fmt.Sprint(nodes) != "[{n1 1 6 2}]" {
		t.Fatalf("nodes %v", nodes)
	}
	for _, b := range []*Batch{
		{Node: "n1", Epoch: 1, From: 7, Seq: 8, Ends: []int{1}, Ops: []Op{join(mem("t", "r", "e", "ue"))}},
		{Node: "n1", Epoch: 1, From: 7, Seq: 8, Ends: []int{1, 0}, Ops: []Op{join(mem("t", "r", "e", "ue"))}},
		{Node: "n1", Epoch: 1, From: 9, Seq: 8, Ends: []int{}},
		{Node: "n1", Epoch: 1, Seq: 8, Ends: []int{0}},
		{Node: "n1", Epoch: 1, From: 7, Sync: 8, Seq: 8, Ends: []int{0, 0}},
	} {
		if _, err := s.Apply(bg, b); !errors.Is(err, ErrInvalidBatch) {
			t.Fatalf("Apply(%+v) = %v, want ErrInvalidBatch", b, err)
		}
	}
}

func testStaleEpoch(t *testing.T, s Store) {
	apply(t, s, &Batch{Node: "n1", Epoch: 100, Seq: 1, Ops: []Op{join(mem("t", "r", "s1", "u"))}})
	r := apply(t, s, &Batch{Node: "n1", Epoch: 99, Seq: 2, Ops: []Op{join(mem("t", "r", "s2", "u"))}})
	wantStatus(t, r, StaleEpoch)
	wantCount(t, s, "t", "r", 1, 1)
}

func testEpochChanged(t *testing.T, s Store) {
	const n = 25
	b := &Batch{Node: "n1", Epoch: 1 << 62, Seq: 1}
	for i := range n {
		b.Ops = append(b.Ops, join(mem("t", fmt.Sprintf("room%d", i%3), fmt.Sprintf("s%02d", i), fmt.Sprint("u", i))))
	}
	apply(t, s, b)
	apply(t, s, &Batch{Node: "n2", Epoch: 3, Seq: 1, Ops: []Op{join(mem("t", "room0", "other", "x"))}})
	newer := &Batch{Node: "n1", Epoch: 1<<62 + 1, Seq: 1, Ops: []Op{join(mem("t", "room0", "fresh", "f"))}}
	r := apply(t, s, newer)
	wantStatus(t, r, EpochChanged)
	if r.OldEpoch != 1<<62 {
		t.Fatalf("OldEpoch %d", r.OldEpoch)
	}
	// A RemoveNode with an older epoch than the stored one removes nothing.
	left, done, err := s.RemoveNode(bg, "n1", 5, 10)
	if err != nil || !done || len(left) != 0 {
		t.Fatalf("RemoveNode(older epoch) = %v %v %v", left, done, err)
	}
	var all []Member
	for i := 0; ; i++ {
		left, done, err := s.RemoveNode(bg, "n1", r.OldEpoch, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 10 {
			t.Fatalf("chunk of %d > limit 10", len(left))
		}
		for _, m := range left {
			if m.Node != "n1" || m.Epoch != 1<<62 || m.User == "" {
				t.Fatalf("removed %+v", m)
			}
		}
		all = append(all, left...)
		if done {
			break
		}
		if i > n {
			t.Fatal("RemoveNode never done")
		}
	}
	if len(all) != n || len(uniq(all)) != n {
		t.Fatalf("removed %d (%d distinct), want %d", len(all), len(uniq(all)), n)
	}
	wantCount(t, s, "t", "room0", 1, 1) // n2's member stays
	wantCount(t, s, "t", "room1", 0, 0)
	nodes, _ := s.Nodes(bg)
	if fmt.Sprint(nodes) != "[{n2 3 1 1}]" {
		t.Fatalf("nodes after RemoveNode %v", nodes)
	}
	r = apply(t, s, newer)
	wantStatus(t, r, Applied)
	wantSessions(t, "joined", r.Joined, "fresh")
	if r.Joined[0].Epoch != 1<<62+1 {
		t.Fatalf("joined epoch %d", r.Joined[0].Epoch)
	}
	// A larger epoch with no members left is accepted at once.
	apply(t, s, &Batch{Node: "n1", Epoch: 1<<62 + 1, Seq: 2, Ops: []Op{leave("t", "room0", "fresh", "x")}})
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1<<62 + 2, Seq: 1}), Applied)
	// Unknown node: done.
	if left, done, err := s.RemoveNode(bg, "nobody", 1, 10); err != nil || !done || len(left) != 0 {
		t.Fatalf("RemoveNode(unknown) = %v %v %v", left, done, err)
	}
}

func uniq(ms []Member) map[string]bool {
	out := make(map[string]bool)
	for _, m := range ms {
		out[m.Tenant+"\x00"+m.Subject+"\x00"+m.Session] = true
	}
	return out
}

func testSync(t *testing.T, s Store) {
	// seq 1..3: a, b, c join; then a snapshot at seq 6 says b, c (info
	// changed), d: a is removed at the end, d joined.
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "a", "ua"))}})
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 2, Ops: []Op{join(mem("t", "r", "b", "ub"))}})
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 3, Ops: []Op{join(mem("t", "r2", "c", "uc"))}})
	apply(t, s, &Batch{Node: "n2", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "z", "uz"))}})
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 5}), Gap)

	c := mem("t", "r2", "c", "uc")
	c.Info = []byte(`{"v":2}`)
	p1 := &Batch{Node: "n1", Epoch: 1, Sync: 6, Ops: []Op{join(mem("t", "r", "b", "ub")), join(c)}}
	r := apply(t, s, p1)
	wantStatus(t, r, Applied)
	if len(r.Joined) != 0 {
		t.Fatalf("sync part re-reported present members: %v", r.Joined)
	}
	// A regular batch the snapshot covers (seq 4 <= 6) is a Duplicate.
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 4, Ops: []Op{leave("t", "r", "b", "x")}}), Duplicate)
	end := &Batch{Node: "n1", Epoch: 1, Sync: 6, SyncEnd: true, Ops: []Op{join(mem("t", "r", "d", "ud"))}}
	r = apply(t, s, end)
	wantStatus(t, r, Applied)
	wantSessions(t, "joined", r.Joined, "d")
	wantSessions(t, "left", r.Left, "a")
	if fmt.Sprint(r.LeftReasons) != "[sync]" || r.Left[0].User != "ua" {
		t.Fatalf("left %+v %v", r.Left, r.LeftReasons)
	}
	wantSessions(t, "room r", allMembers(t, s, "t", "r"), "b", "d", "z")
	if ms := allMembers(t, s, "t", "r2"); len(ms) != 1 || string(ms[0].Info) != `{"v":2}` {
		t.Fatalf("r2 %+v", ms)
	}
	nodes, _ := s.Nodes(bg)
	if fmt.Sprint(nodes) != "[{n1 1 6 3} {n2 1 1 1}]" {
		t.Fatalf("nodes %v", nodes)
	}
	// Later batches, then a late duplicate of the snapshot's end and part:
	// Duplicate, nothing removed or added.
	e := mem("t", "r", "e", "ue")
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 7, Ops: []Op{join(e)}})
	wantStatus(t, apply(t, s, p1), Duplicate)
	r = apply(t, s, end)
	wantStatus(t, r, Duplicate)
	if len(r.Left)+len(r.Joined) != 0 {
		t.Fatalf("late SyncEnd changed members: %+v", r)
	}
	wantSessions(t, "room r", allMembers(t, s, "t", "r"), "b", "d", "e", "z")
	// A new snapshot at 9 (after a gap) with b only: d, e, c go; the
	// regular join of e at seq 7 got generation 0.
	r = apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 9, SyncEnd: true, Ops: []Op{join(mem("t", "r", "b", "ub"))}})
	wantStatus(t, r, Applied)
	wantSessions(t, "left", r.Left, "c", "d", "e")
	wantCount(t, s, "t", "r", 2, 2)
	wantCount(t, s, "t", "r2", 0, 0)
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 10}), Applied)
	// An empty snapshot removes every member of the node.
	r = apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 12, SyncEnd: true})
	wantSessions(t, "left", r.Left, "b")
	wantSessions(t, "room r", allMembers(t, s, "t", "r"), "z")
}

// testSyncSuperseded: parts of an older snapshot that arrive after a newer
// snapshot began are Duplicates; a regular join during a snapshot keeps the
// snapshot's tag of the member.
func testSyncSuperseded(t *testing.T, s Store) {
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "a", "ua"))}})
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 8, Ops: []Op{join(mem("t", "r", "b", "ub"))}}), Applied)
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 5, Ops: []Op{join(mem("t", "r", "c", "uc"))}}), Duplicate)
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 5, SyncEnd: true}), Duplicate)
	r := apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 8, SyncEnd: true, Ops: []Op{join(mem("t", "r", "a", "ua"))}})
	wantStatus(t, r, Applied)
	if len(r.Left) != 0 || len(r.Joined) != 0 {
		t.Fatalf("%+v", r)
	}
	wantSessions(t, "room", allMembers(t, s, "t", "r"), "a", "b")
	// Overwrite b with a regular join, then a snapshot part tags a: the
	// end keeps a (tagged) and drops b (regular overwrite kept gen 8).
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 9, Ops: []Op{join(mem("t", "r", "b", "ub"))}})
	r = apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 12, SyncEnd: true, Ops: []Op{join(mem("t", "r", "a", "ua"))}})
	wantSessions(t, "left", r.Left, "b")
}

// testCountUsersLarge: distinct users stay exact in a room that grows past
// a few thousand users (the Valkey store regroups them as it grows),
// through leaves, a user change, a snapshot's end and RemoveNode.
func testCountUsersLarge(t *testing.T, s Store) {
	const n = 3000 // sessions; user i/2 for i < 1000 (two sessions each), else user i
	users := func(k int) int { return min(k, 1000)/2 + max(k-1000, 0) }
	seq := map[string]uint64{}
	send := func(node string, ops []Op) Result {
		seq[node]++
		return apply(t, s, &Batch{Node: node, Epoch: 1, Seq: seq[node], Ops: ops})
	}
	var ops [2][]Op
	for i := range n {
		u := i
		if i < 1000 {
			u = i / 2
		}
		ops[i%2] = append(ops[i%2], join(mem("t", "big", fmt.Sprintf("s%05d", i), fmt.Sprintf("u%05d", u))))
		if len(ops[i%2]) == 250 {
			send(fmt.Sprint("n", i%2), ops[i%2])
			ops[i%2] = nil
		}
	}
	wantCount(t, s, "t", "big", n, users(n))
	// Sessions 2000.. leave: users 1000.. of them go.
	var leaves [2][]Op
	for i := 2000; i < n; i++ {
		leaves[i%2] = append(leaves[i%2], leave("t", "big", fmt.Sprintf("s%05d", i), "closed"))
	}
	send("n0", leaves[0])
	send("n1", leaves[1])
	wantCount(t, s, "t", "big", 2000, users(2000))
	// s00000 changes user (u00000 keeps s00001): one more user.
	send("n0", []Op{join(mem("t", "big", "s00000", "fresh"))})
	wantCount(t, s, "t", "big", 2000, users(2000)+1)
	// n1 goes: its sessions are the odd ones; of the pairs, the even
	// sessions keep their users.
	for {
		_, done, err := s.RemoveNode(bg, "n1", 1, 300)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			break
		}
	}
	wantCount(t, s, "t", "big", 1000, 1000)
	// An empty snapshot of n0 removes the rest.
	seq["n0"]++
	r := apply(t, s, &Batch{Node: "n0", Epoch: 1, Sync: seq["n0"], SyncEnd: true})
	if len(r.Left) != 1000 {
		t.Fatalf("snapshot end removed %d", len(r.Left))
	}
	wantCount(t, s, "t", "big", 0, 0)
	// The room starts small again.
	send("n0", []Op{join(mem("t", "big", "again", "u"))})
	wantCount(t, s, "t", "big", 1, 1)
}

// testCountUsersThreshold: distinct users stay exact while a room crosses
// the sizes at which the Valkey store starts (past 128 members) and stops
// (64 or fewer) keeping its users, with users of several sessions, one
// user of many, and a user change in a small room.
func testCountUsersThreshold(t *testing.T, s Store) {
	seq := uint64(0)
	send := func(ops ...Op) {
		seq++
		wantStatus(t, apply(t, s, &Batch{Node: "n", Epoch: 1, Seq: seq, Ops: ops}), Applied)
	}
	sess := func(i int) string { return fmt.Sprintf("s%04d", i) }
	var ops []Op
	for i := range 200 { // user i%50: 4 sessions each
		ops = append(ops, join(mem("t", "r", sess(i), fmt.Sprintf("u%02d", i%50))))
	}
	send(ops[:100]...)
	wantCount(t, s, "t", "r", 100, 50)
	send(ops[100:]...)
	wantCount(t, s, "t", "r", 200, 50)
	leaveRange := func(from, to int) {
		var ls []Op
		for i := from; i < to; i++ {
			ls = append(ls, leave("t", "r", sess(i), "closed"))
		}
		send(ls...)
	}
	leaveRange(60, 200) // every user keeps a session
	wantCount(t, s, "t", "r", 60, 50)
	leaveRange(10, 60) // users 10..49 go: 10 members left
	wantCount(t, s, "t", "r", 10, 10)
	var crowd []Op
	for i := 1000; i < 1150; i++ { // one user, 150 sessions
		crowd = append(crowd, join(mem("t", "r", sess(i), "crowd")))
	}
	send(crowd...)
	wantCount(t, s, "t", "r", 160, 11)
	leaveRange(1000, 1149)
	wantCount(t, s, "t", "r", 11, 11)
	send(join(mem("t", "r", sess(0), "u01"))) // s0000 becomes u01's: u00 goes
	wantCount(t, s, "t", "r", 11, 10)
	leaveRange(0, 10)
	leaveRange(1149, 1150)
	wantCount(t, s, "t", "r", 0, 0)
}

func testTenantIsolation(t *testing.T, s Store) {
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{
		join(mem("acme", "chat", "s1", "u1")),
		join(mem("globex", "chat", "s2", "u2")),
		join(mem("globex", "chat", "s3", "u3")),
	}})
	wantCount(t, s, "acme", "chat", 1, 1)
	wantCount(t, s, "globex", "chat", 2, 2)
	wantSessions(t, "acme", allMembers(t, s, "acme", "chat"), "s1")
	r := apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 2, Ops: []Op{leave("acme", "chat", "s2", "x")}})
	if len(r.Left) != 0 {
		t.Fatalf("a leave in acme removed %+v", r.Left)
	}
	for _, m := range allMembers(t, s, "globex", "chat") {
		if m.Tenant != "globex" || m.Subject != "chat" {
			t.Fatalf("member %+v", m)
		}
	}
}

func testCountUsers(t *testing.T, s Store) {
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{
		join(mem("t", "r", "s1", "alice")),
		join(mem("t", "r", "s2", "alice")),
	}})
	wantCount(t, s, "t", "r", 2, 1)
	apply(t, s, &Batch{Node: "n2", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "s3", "bob"))}})
	wantCount(t, s, "t", "r", 3, 2)
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 2, Ops: []Op{leave("t", "r", "s1", "x")}})
	wantCount(t, s, "t", "r", 2, 2)
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 3, Ops: []Op{leave("t", "r", "s2", "x")}})
	wantCount(t, s, "t", "r", 1, 1)
	wantCount(t, s, "t", "nothing", 0, 0)
}

// fill joins n members s00000.. to (t, big) from node in 512-op batches
// starting at seq; it returns the next seq.
func fill(t testing.TB, s Store, node, prefix string, n int, seq uint64) uint64 {
	for i := 0; i < n; {
		b := &Batch{Node: node, Epoch: 1, Seq: seq}
		for ; i < n && len(b.Ops) < 512; i++ {
			b.Ops = append(b.Ops, join(mem("t", "big", fmt.Sprintf("%s%06d", prefix, i), fmt.Sprint("u", i%5000))))
		}
		r, err := s.Apply(bg, b)
		if err != nil || r.Status != Applied {
			t.Fatalf("fill: %v %v", r.Status, err)
		}
		seq++
	}
	return seq
}

func testPaging(t *testing.T, s Store) {
	const n = 10000
	fill(t, s, "n1", "s", n, 1)
	wantCount(t, s, "t", "big", n, 5000)
	seen := make(map[string]int)
	cursor, pages, last := "", 0, ""
	for {
		page, next, err := s.Members(bg, "t", "big", cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 1000 {
			t.Fatalf("page of %d", len(page))
		}
		for _, m := range page {
			if m.Session <= last {
				t.Fatalf("order: %q after %q", m.Session, last)
			}
			last = m.Session
			seen[m.Session]++
		}
		pages++
		if next == "" {
			break
		}
		cursor = next
	}
	if len(seen) != n || pages != 10 {
		t.Fatalf("%d distinct members in %d pages, want %d in 10", len(seen), pages, n)
	}
	for sess, c := range seen {
		if c != 1 {
			t.Fatalf("%s seen %d times", sess, c)
		}
	}
}

// testPagingConcurrentJoins: members present for the whole paging are
// returned exactly once while other members join and leave.
func testPagingConcurrentJoins(t *testing.T, s Store) {
	const n = 10000
	seq := fill(t, s, "n1", "s", n, 1)
	p := peerOf(t, s)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Sessions that sort between, before and after the originals.
			ops := []Op{
				join(mem("t", "big", fmt.Sprintf("s%06d-x%d", (i*37)%n, i), "v")),
				join(mem("t", "big", fmt.Sprintf("a%d", i), "v")),
				join(mem("t", "big", fmt.Sprintf("z%d", i), "v")),
			}
			if i > 0 {
				ops = append(ops, leave("t", "big", fmt.Sprintf("s%06d-x%d", ((i-1)*37)%n, i-1), "x"))
			}
			if _, err := p.Apply(bg, &Batch{Node: "n2", Epoch: 1, Seq: uint64(i + 1), Ops: ops}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	_ = seq
	seen := make(map[string]int)
	cursor := ""
	for {
		page, next, err := s.Members(bg, "t", "big", cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page {
			seen[m.Session]++
		}
		if next == "" {
			break
		}
		cursor = next
	}
	close(stop)
	<-done
	for i := range n {
		if c := seen[fmt.Sprintf("s%06d", i)]; c != 1 {
			t.Fatalf("s%06d seen %d times", i, c)
		}
	}
	for sess, c := range seen {
		if c != 1 {
			t.Fatalf("%s seen %d times", sess, c)
		}
	}
}

// testRemoveNodeConcurrent: two clients remove a node's members at once;
// each member is returned exactly once in total.
func testRemoveNodeConcurrent(t *testing.T, s Store) {
	const n = 3000
	fill(t, s, "n1", "s", n, 1)
	apply(t, s, &Batch{Node: "n2", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "big", "other", "o"))}})
	p := peerOf(t, s)
	var mu sync.Mutex
	var all []Member
	var wg sync.WaitGroup
	for _, st := range []Store{s, p, s, p} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				left, done, err := st.RemoveNode(bg, "n1", 1, 100)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				all = append(all, left...)
				mu.Unlock()
				if done {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(all) != n || len(uniq(all)) != n {
		t.Fatalf("removed %d (%d distinct), want %d", len(all), len(uniq(all)), n)
	}
	wantCount(t, s, "t", "big", 1, 1)
	nodes, _ := s.Nodes(bg)
	if fmt.Sprint(nodes) != "[{n2 1 1 1}]" {
		t.Fatalf("nodes %v", nodes)
	}
}

func testInvalid(t *testing.T, s Store) {
	big := mem("t", "r", "s", "u")
	big.Info = make([]byte, MaxInfo+1)
	for _, b := range []*Batch{
		{Epoch: 1, Seq: 1},
		{Node: "n", Epoch: 1},
		{Node: "n", Epoch: 1, Seq: 1, SyncEnd: true},
		{Node: "n", Epoch: 1, Sync: 3, Ops: []Op{leave("t", "r", "s", "x")}},
		{Node: "n", Epoch: 1, Seq: 1, Ops: []Op{join(mem("", "r", "s", "u"))}},
		{Node: "n", Epoch: 1, Seq: 1, Ops: []Op{join(big)}},
	} {
		if _, err := s.Apply(bg, b); !errors.Is(err, ErrInvalidBatch) {
			t.Fatalf("Apply(%+v) = %v, want ErrInvalidBatch", b, err)
		}
	}
}

// TestValkeyUnavailable: with Valkey killed every call fails within about
// 2 s with an error wrapping ErrUnavailable; after a restart (empty: no
// persistence) the same store works again.
func TestValkeyUnavailable(t *testing.T) {
	srv := valkeytest.Start(t)
	s, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "s1", "u"))}})
	srv.Kill()
	calls := map[string]func(ctx context.Context) error{
		"Ping": s.Ping,
		"Apply": func(ctx context.Context) error {
			_, err := s.Apply(ctx, &Batch{Node: "n1", Epoch: 1, Seq: 2, Ops: []Op{join(mem("t", "r", "s2", "u"))}})
			return err
		},
		"RemoveNode": func(ctx context.Context) error {
			_, _, err := s.RemoveNode(ctx, "n1", 1, 10)
			return err
		},
		"Nodes": func(ctx context.Context) error { _, err := s.Nodes(ctx); return err },
		"Members": func(ctx context.Context) error {
			_, _, err := s.Members(ctx, "t", "r", "", 10)
			return err
		},
		"Count": func(ctx context.Context) error { _, _, err := s.Count(ctx, "t", "r"); return err },
	}
	for name, call := range calls {
		for range 3 {
			ctx, cancel := context.WithTimeout(bg, 10*time.Second)
			start := time.Now()
			err := call(ctx)
			took := time.Since(start)
			cancel()
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s with Valkey down: %v, want ErrUnavailable", name, err)
			}
			if took > 2500*time.Millisecond {
				t.Fatalf("%s took %v to fail", name, took)
			}
		}
	}
	if _, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr()}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewValkeyStore with Valkey down: %v", err)
	}
	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for s.Ping(bg) != nil {
		if time.Now().After(deadline) {
			t.Fatal("store did not recover after the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The restarted server is empty: the node's next batch is a Gap (the
	// brain asks for a snapshot), and the snapshot applies.
	wantStatus(t, apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 2}), Gap)
	r := apply(t, s, &Batch{Node: "n1", Epoch: 1, Sync: 2, SyncEnd: true, Ops: []Op{join(mem("t", "r", "s1", "u"))}})
	wantStatus(t, r, Applied)
	wantSessions(t, "joined", r.Joined, "s1")
	wantCount(t, s, "t", "r", 1, 1)
}

// TestValkeyHung: a server that accepts but never answers (SIGSTOP) makes
// calls fail with ErrUnavailable after about the Timeout, not hang.
func TestValkeyHung(t *testing.T) {
	srv := valkeytest.Start(t)
	s, err := NewValkeyStore(ValkeyConfig{Addr: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	apply(t, s, &Batch{Node: "n1", Epoch: 1, Seq: 1, Ops: []Op{join(mem("t", "r", "s1", "u"))}})
	srv.Pause()
	for _, name := range []string{"Apply", "Count"} {
		start := time.Now()
		var err error
		if name == "Apply" {
			_, err = s.Apply(bg, &Batch{Node: "n1", Epoch: 1, Seq: 2})
		} else {
			_, _, err = s.Count(bg, "t", "r")
		}
		if took := time.Since(start); !errors.Is(err, ErrUnavailable) || took > 2500*time.Millisecond {
			t.Fatalf("%s with Valkey hung: %v after %v, want ErrUnavailable within 2.5s", name, err, took)
		}
	}
	srv.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for s.Ping(bg) != nil {
		if time.Now().After(deadline) {
			t.Fatal("store did not recover")
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantCount(t, s, "t", "r", 1, 1)
}
