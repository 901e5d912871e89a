package main

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gobwas/ws"
)

// serverFrame encodes a frame the way a server does (unmasked) with
// gobwas/ws, the encoder the gateway and the bare server use.
func serverFrame(t testing.TB, fin bool, op ws.OpCode, p []byte) []byte {
	var b bytes.Buffer
	if err := ws.WriteHeader(&b, ws.Header{Fin: fin, OpCode: op, Length: int64(len(p))}); err != nil {
		t.Fatal(err)
	}
	b.Write(p)
	return b.Bytes()
}

type seenFrame struct {
	fin bool
	op  byte
	p   string
}

func collectFrames(t testing.TB, b []byte) ([]seenFrame, int, int64, error) {
	var got []seenFrame
	used, need, err := walkFrames(b, maxServerFrame, frameFunc(func(h frameHdr, p []byte) error {
		got = append(got, seenFrame{h.Fin, h.Op, string(p)})
		return nil
	}))
	return got, used, need, err
}

func TestWalkFramesBatch(t *testing.T) {
	long := bytes.Repeat([]byte("a"), 300)   // 16-bit length
	huge := bytes.Repeat([]byte("b"), 70000) // 64-bit length
	var stream []byte
	stream = append(stream, serverFrame(t, true, ws.OpText, []byte("M 1"))...)
	stream = append(stream, serverFrame(t, true, ws.OpBinary, long)...)
	stream = append(stream, serverFrame(t, false, ws.OpText, []byte("part1"))...)
	stream = append(stream, serverFrame(t, true, ws.OpPing, []byte("hb"))...)
	stream = append(stream, serverFrame(t, true, ws.OpContinuation, []byte("part2"))...)
	stream = append(stream, serverFrame(t, true, ws.OpText, huge)...)
	stream = append(stream, serverFrame(t, true, ws.OpText, nil)...)
	want := []seenFrame{{true, 1, "M 1"}, {true, 2, string(long)}, {false, 1, "part1"}, {true, 9, "hb"},
		{true, 0, "part2"}, {true, 1, string(huge)}, {true, 1, ""}}
	got, used, need, err := collectFrames(t, stream)
	if err != nil || used != len(stream) || need != 0 {
		t.Fatalf("used %d of %d, need %d, err %v", used, len(stream), need, err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frame %d: got %+v, want %+v", i, got[i].op, want[i].op)
		}
	}
	// Every cut point: the frames before the cut are delivered, the rest
	// waits; feeding the rest completes the stream.
	for cut := 0; cut <= len(stream); cut += 1 + cut/64 {
		got1, used1, need1, err := collectFrames(t, stream[:cut])
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		got2, used2, _, err := collectFrames(t, stream[used1:])
		if err != nil || used1+used2 != len(stream) {
			t.Fatalf("cut %d: rest used %d, err %v", cut, used2, err)
		}
		if len(got1)+len(got2) != len(want) {
			t.Fatalf("cut %d: %d+%d frames", cut, len(got1), len(got2))
		}
		if need1 != 0 && need1 <= int64(cut-used1) {
			t.Fatalf("cut %d: need %d but %d buffered", cut, need1, cut-used1)
		}
	}
}

func TestWalkFramesMasked(t *testing.T) {
	f := appendMaskedFrame(nil, 1, []byte(`{"op":"pub"}`), 0xdeadbeef)
	h, err := ws.ReadHeader(bytes.NewReader(f))
	if err != nil || !h.Masked || h.Length != 12 {
		t.Fatalf("gobwas reads %+v %v", h, err)
	}
	got, used, _, err := collectFrames(t, f)
	if err != nil || used != len(f) || len(got) != 1 || got[0].p != `{"op":"pub"}` {
		t.Fatalf("got %+v used %d err %v", got, used, err)
	}
	long := bytes.Repeat([]byte("z"), 70000)
	f = appendMaskedFrame(nil, 2, long, 12345)
	got, _, _, err = collectFrames(t, f)
	if err != nil || len(got) != 1 || got[0].p != string(long) {
		t.Fatalf("long masked frame: %v", err)
	}
}

func TestWalkFramesErrors(t *testing.T) {
	for name, b := range map[string][]byte{
		"rsv":          {0xc1, 0x00},
		"opcode":       {0x83, 0x00},
		"long ping":    append([]byte{0x89, 126, 0, 126}, make([]byte, 126)...),
		"fragmented":   {0x09, 0x00},
		"too big":      {0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0},
		"huge 64-bit":  {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0},
		"close big":    append([]byte{0x88, 126, 0, 200}, make([]byte, 200)...),
		"rsv2 on text": {0xa1, 0x00},
	} {
		if _, _, _, err := collectFrames(t, b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	_, _, _, err := collectFrames(t, []byte{0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0})
	if !errors.Is(err, errFrameTooBig) {
		t.Errorf("256 MiB frame: %v", err)
	}
}

func TestParseHTTP101(t *testing.T) {
	ok := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n\x81\x01W")
	n, err := parseHTTP101(ok, []byte("abc="))
	if err != nil || n != len(ok)-3 {
		t.Fatalf("n %d err %v", n, err)
	}
	if n, err := parseHTTP101(ok[:20], []byte("abc=")); n != 0 || err != nil {
		t.Fatalf("partial: n %d err %v", n, err)
	}
	if _, err := parseHTTP101(ok, []byte("xyz=")); !errors.Is(err, errUpgradeAccept) {
		t.Fatalf("wrong accept: %v", err)
	}
	_, err = parseHTTP101([]byte("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"), nil)
	var se *upgradeStatusError
	if !errors.As(err, &se) || se.code != "401" {
		t.Fatalf("401: %v", err)
	}
}

func TestPayloadSeq(t *testing.T) {
	p := newPayload(20)
	if len(p) != minPayload {
		t.Fatalf("len %d", len(p))
	}
	fillPayload(p, 1234567890123456789)
	fillSeq(p, 4242)
	if s, ok := payloadSeq(p); !ok || s != 4242 {
		t.Fatalf("seq %d %v", s, ok)
	}
	if ts, ok := payloadTime(p); !ok || ts != 1234567890123456789 {
		t.Fatalf("ts %d %v", ts, ok)
	}
	var st seqTrack
	for _, tc := range []struct {
		seq  uint64
		gap  uint64
		back bool
	}{{0, 0, false}, {1, 0, false}, {4, 2, false}, {3, 0, true}, {4, 0, true}, {5, 0, false}} {
		g, b := st.see(tc.seq)
		if g != tc.gap || b != tc.back {
			t.Fatalf("seq %d: gap %d back %v", tc.seq, g, b)
		}
	}
	if st.got != 4 {
		t.Fatalf("got %d", st.got)
	}
}

// FuzzWalkFrames: the parser never panics, never reports more bytes than
// it has, and agrees with gobwas/ws on where complete frames end.
func FuzzWalkFrames(f *testing.F) {
	f.Add(serverFrame(f, true, ws.OpText, []byte("M hello")))
	f.Add(append(serverFrame(f, false, ws.OpText, []byte("a")), serverFrame(f, true, ws.OpContinuation, []byte("b"))...))
	f.Add(appendMaskedFrame(nil, 2, []byte("xyz"), 7))
	f.Add([]byte{0x82, 126, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := append([]byte(nil), b...)
		n := 0
		used, need, err := walkFrames(b, 1<<20, frameFunc(func(h frameHdr, p []byte) error {
			n++
			if int64(len(p)) != h.Len {
				t.Fatalf("payload %d, header says %d", len(p), h.Len)
			}
			return nil
		}))
		if used < 0 || used > len(b) {
			t.Fatalf("used %d of %d", used, len(b))
		}
		if need != 0 && need <= int64(len(b)-used) {
			t.Fatalf("need %d with %d left", need, len(b)-used)
		}
		// gobwas/ws must read the same number of frames from the used part.
		r := bytes.NewReader(orig[:used])
		for k := 0; k < n; k++ {
			h, herr := ws.ReadHeader(r)
			if herr != nil {
				t.Fatalf("gobwas fails on frame %d of %d: %v", k, n, herr)
			}
			if _, herr := r.Seek(h.Length, 1); herr != nil {
				t.Fatal(herr)
			}
		}
		if r.Len() != 0 {
			t.Fatalf("%d bytes left after %d frames", r.Len(), n)
		}
		_ = err
	})
}
