package brain

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/arqonbus/arqonbus/internal/valkeytest"
	"github.com/arqonbus/arqonbus/pb"
)

// TestEncodeAnswer: the hand-made PresenceAnswer decodes, with the
// generated code, to the members, counts and cursor it was made of.
func TestEncodeAnswer(t *testing.T) {
	ms := []Member{
		{Tenant: "t", Subject: "r", Session: "s1", User: "u1", Node: "n1", JoinedAt: 1700000000123, Info: []byte(`{"a":1}`)},
		{Tenant: "t", Subject: "r", Session: "s2", User: "", Node: "n2"},
		{Tenant: "t", Subject: "r", Session: "s3", User: "u3", Node: "n1", JoinedAt: -5},
	}
	var dst []byte
	for i := range ms {
		dst = appendAnswerMember(dst, &ms[i])
	}
	dst = appendAnswerTail(dst, 70000, 3, "s3")
	var a pb.PresenceAnswer
	if err := a.UnmarshalVT(dst); err != nil {
		t.Fatal(err)
	}
	if len(a.Members) != 3 || a.Count != 70000 || a.Users != 3 || a.Cursor != "s3" || a.Code != 0 {
		t.Fatalf("%+v", &a)
	}
	for i, m := range a.Members {
		w := toPB(&ms[i])
		if !proto.Equal(m, w) {
			t.Fatalf("member %d: %+v, want %+v", i, m, w)
		}
	}
	want, _ := (&pb.PresenceAnswer{Members: a.Members, Count: a.Count, Users: a.Users, Cursor: a.Cursor}).MarshalVT()
	if string(want) != string(dst) {
		t.Fatalf("encoding differs from MarshalVT:\n%x\n%x", dst, want)
	}
	a.Reset()
	if err := a.UnmarshalVT(appendAnswerError(nil, pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "down")); err != nil ||
		a.Code != pb.ErrorCode_ERROR_CODE_UNAVAILABLE || a.Message != "down" {
		t.Fatalf("%+v %v", &a, err)
	}
}

func toPB(m *Member) *pb.PresenceMember {
	return &pb.PresenceMember{User: m.User, Session: m.Session, Node: m.Node, JoinedAt: m.JoinedAt, Info: m.Info}
}

// TestEncodeEvent: the hand-made PresenceEvent is MarshalVT's.
func TestEncodeEvent(t *testing.T) {
	m := Member{Tenant: "acme", Subject: "room.1", Session: "S1", User: "alice", Node: "node-a", JoinedAt: 42, Info: []byte(`{}`)}
	for _, leave := range []bool{false, true} {
		reason := ""
		if leave {
			reason = "closed"
		}
		got := appendEvent(nil, &m, leave, reason)
		want, _ := (&pb.PresenceEvent{Tenant: m.Tenant, Subject: m.Subject, Leave: leave, Reason: reason, Member: toPB(&m)}).MarshalVT()
		if string(got) != string(want) {
			t.Fatalf("leave=%v:\n%x\n%x", leave, got, want)
		}
	}
}

// TestAppendMembersSame: both stores' encoded pages decode to what
// Members returns.
func TestAppendMembersSame(t *testing.T) {
	for name, s := range testStores(t) {
		t.Run(name, func(t *testing.T) {
			b := benchBatch("n1", 1, 0, 300, 1, false)
			b.Ops[7].Member.Info = []byte(`{"x":"y"}`)
			if _, err := s.Apply(bg, b); err != nil {
				t.Fatal(err)
			}
			mp := s.(memberPager)
			cursor := ""
			for page := 0; ; page++ {
				ms, next, err := s.Members(bg, "acme", "room.0", cursor, 128)
				if err != nil {
					t.Fatal(err)
				}
				raw, next2, err := mp.appendMembers(bg, nil, "acme", "room.0", cursor, 128)
				if err != nil || next2 != next {
					t.Fatalf("page %d: next %q, want %q (%v)", page, next2, next, err)
				}
				var a pb.PresenceAnswer
				if err := a.UnmarshalVT(raw); err != nil || len(a.Members) != len(ms) {
					t.Fatalf("page %d: %d members, want %d (%v)", page, len(a.Members), len(ms), err)
				}
				for i := range ms {
					if w := toPB(&ms[i]); !proto.Equal(a.Members[i], w) {
						t.Fatalf("page %d member %d: %v, want %v", page, i, a.Members[i], w)
					}
				}
				if next == "" {
					if page != 2 {
						t.Fatalf("%d pages", page+1)
					}
					return
				}
				cursor = next
			}
		})
	}
}

// testStores returns a fresh MemoryStore and a fresh ValkeyStore (on a
// private server).
func testStores(t *testing.T) map[string]Store {
	ms := NewMemoryStore()
	t.Cleanup(func() { ms.Close() })
	srv := valkeytestStart(t)
	vs, err := NewValkeyStore(ValkeyConfig{Addr: srv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vs.Close() })
	return map[string]Store{"memory": ms, "valkey": vs}
}

// BenchmarkAppendMembers: a page of 1000 of a 10k-member room encoded as
// a PresenceAnswer's members, as the brain answers it.
func BenchmarkAppendMembers(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store) {
		fillRoom(b, s, 10000)
		mp := s.(memberPager)
		buf := make([]byte, 0, 256<<10)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			cursor := ""
			if p := i % 10; p > 0 {
				cursor = session(p*1000 - 1)
			}
			out, _, err := mp.appendMembers(bg, buf[:0], "acme", "room.0", cursor, 1000)
			if err != nil || len(out) == 0 {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendEvent: one event encoded.
func BenchmarkAppendEvent(b *testing.B) {
	m := Member{Tenant: "acme", Subject: "room.1", Session: session(1), User: "user-0000001", Node: "node-a", JoinedAt: 1700000000000}
	var buf []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = appendEvent(buf[:0], &m, i%2 == 1, "closed")
	}
	_ = fmt.Sprint(len(buf))
}

func valkeytestStart(t *testing.T) string { return valkeytest.Start(t).Addr() }
