package gateway

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/arqonbus/arqonbus/pb"
)

// decodeFrame strips the WebSocket header of a server frame and decodes
// its Protobuf body.
func decodeFrame(t testing.TB, b []byte) *pb.ServerFrame {
	t.Helper()
	n := int(b[1] & 0x7f)
	hl := 2
	switch n {
	case 126:
		hl = 4
	case 127:
		hl = 10
	}
	var f pb.ServerFrame
	if err := f.UnmarshalVT(b[hl:]); err != nil {
		t.Fatal(err)
	}
	return &f
}

func TestPresenceFrameProto(t *testing.T) {
	ans := &pb.PresenceAnswer{Count: 1200, Users: 7, Cursor: "s0999"}
	for i := range 1000 {
		ans.Members = append(ans.Members, &pb.PresenceMember{User: "u", Session: "s" + string(rune('a'+i%26)),
			Node: "n1", JoinedAt: int64(i), Info: []byte(`{"i":1}`)})
	}
	raw, _ := ans.MarshalVT()
	b, code, _, err := presenceFrameProto(42, "room.1", raw)
	if err != nil || code != 0 {
		t.Fatal(err, code)
	}
	defer b.Release()
	f := decodeFrame(t, b.B)
	if f.Op != pb.Op_OP_PRESENCE || f.Id != 42 || f.Subject != "room.1" || f.Count != 1200 || f.Users != 7 || f.Cursor != "s0999" || len(f.Members) != 1000 {
		t.Fatalf("frame %v count %d users %d cursor %q members %d", f.Op, f.Count, f.Users, f.Cursor, len(f.Members))
	}
	for i, m := range f.Members {
		if !proto.Equal(m, ans.Members[i]) {
			t.Fatalf("member %d: %v, want %v", i, m, ans.Members[i])
		}
	}
	// An error answer gives its code, no frame.
	raw, _ = (&pb.PresenceAnswer{Code: pb.ErrorCode_ERROR_CODE_UNAVAILABLE, Message: "store down"}).MarshalVT()
	if b, code, msg, err := presenceFrameProto(1, "r", raw); b != nil || err != nil || code != pb.ErrorCode_ERROR_CODE_UNAVAILABLE || msg != "store down" {
		t.Fatalf("error answer: %v %v %q %v", b, code, msg, err)
	}
}

// FuzzPresenceFrameProto: any bytes a brain might answer either fail
// cleanly or give a frame with exactly the members, counts and cursor
// that decoding the answer gives.
func FuzzPresenceFrameProto(f *testing.F) {
	seed, _ := (&pb.PresenceAnswer{Count: 2, Users: 1, Cursor: "c", Members: []*pb.PresenceMember{{User: "a", Session: "b"}}}).MarshalVT()
	f.Add(seed)
	f.Add([]byte{0x0a, 0x80})
	f.Add([]byte{0x28, 0x09, 0x32, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, code, _, err := presenceFrameProto(7, "room", raw)
		var ans pb.PresenceAnswer
		uerr := ans.UnmarshalVT(raw)
		if err != nil {
			return // malformed: the caller answers UNAVAILABLE
		}
		if uerr != nil {
			// protowire skips what vtprotobuf refuses (e.g. a member
			// whose own bytes are invalid); the frame is still one the
			// client decodes or refuses as a whole, never a panic.
			if b != nil {
				b.Release()
			}
			return
		}
		if code != ans.Code {
			t.Fatalf("code %v, want %v", code, ans.Code)
		}
		if code != 0 {
			return
		}
		defer b.Release()
		fr := decodeFrame(t, b.B)
		if fr.Count != ans.Count || fr.Users != ans.Users || fr.Cursor != ans.Cursor || len(fr.Members) != len(ans.Members) {
			t.Fatalf("frame %+v, answer %+v", fr, &ans)
		}
		for i := range fr.Members {
			if !proto.Equal(fr.Members[i], ans.Members[i]) {
				t.Fatalf("member %d differs", i)
			}
		}
	})
}
