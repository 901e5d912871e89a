package gateway

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Bad frame content gets an ERROR frame with a code; the connection stays up.
func TestBadInputKeepsConnection(t *testing.T) {
	n := startNode(t, nil, func(c *Config) { c.MaxSubscriptions = 2 })
	r := rawDial(t, n, token(t, "t1", "a"))
	cases := []struct{ in, want string }{
		{`{"op":"dance","id":1}`, `{"op":"error","id":1,"code":"VALIDATION_ERROR","message":"unknown op: dance"}`},
		{`{"op":"sub","id":2,`, `"code":"VALIDATION_ERROR","message":"malformed JSON"`},
		{`[1,2]`, `"code":"VALIDATION_ERROR","message":"frame must be a JSON object"`},
		{`{"op":"sub","id":3,"subject":"a..b"}`, `{"op":"error","id":3,"code":"VALIDATION_ERROR","message":"invalid subject`},
		{`{"op":"sub","id":4,"subject":"a.>.b"}`, `"id":4,"code":"VALIDATION_ERROR"`},
		{`{"op":"pub","id":5,"subject":"a.*","data":"x"}`, `"id":5,"code":"VALIDATION_ERROR","message":"invalid subject`},
		{`{"op":"pub","id":6,"subject":"a b","data":"x"}`, `"id":6,"code":"VALIDATION_ERROR"`},
		{`{"op":"sub","id":7,"subject":7}`, `"id":7,"code":"VALIDATION_ERROR","message":"field subject has the wrong type"`},
		{`{"op":"pub","id":8,"subject":"a","data_b64":"!!"}`, `"id":8,"code":"VALIDATION_ERROR","message":"data_b64 is not valid base64"`},
		{`{"op":"unsub","id":9,"subject":"never"}`, `"id":9,"code":"VALIDATION_ERROR","message":"not subscribed to never"`},
		{`{"op":"sub","id":10,"subject":"s1"}`, `{"op":"ack","id":10}`},
		{`{"op":"sub","id":11,"subject":"s1"}`, `{"op":"ack","id":11}`},
		{`{"op":"sub","id":12,"subject":"s2"}`, `{"op":"ack","id":12}`},
		{`{"op":"sub","id":13,"subject":"s3"}`, `"id":13,"code":"LIMIT_EXCEEDED"`},
		{`{"op":"unsub","id":14,"subject":"s1"}`, `{"op":"ack","id":14}`},
		{`{"op":"sub","id":15,"subject":"s3"}`, `{"op":"ack","id":15}`},
		{`{"op":"ping","id":16}`, `{"op":"pong","id":16}`},
	}
	for _, c := range cases {
		r.send(ws.OpText, c.in)
		if got := r.readText(); !strings.Contains(got, c.want) {
			t.Fatalf("%s\n got %s\nwant %s", c.in, got, c.want)
		}
	}
	// A binary frame that is not a ClientFrame: an error in Protobuf.
	r.send(ws.OpBinary, "\xff\xff\xff")
	op, p := r.read()
	if op != ws.OpBinary || !strings.Contains(string(p), "malformed Protobuf frame") {
		t.Fatalf("binary garbage: %v %q", op, p)
	}
	r.send(ws.OpText, `{"op":"ping","id":99}`)
	if got := r.readText(); got != `{"op":"pong","id":99}` {
		t.Fatalf("after errors: %s", got)
	}
}

// Frames split at every byte, fragmented messages with interleaved control
// frames, and several frames in one write all work.
func TestPartialAndFragmentedFrames(t *testing.T) {
	n := startNode(t, nil, nil)
	r := rawDial(t, n, token(t, "t1", "a"))
	// byte by byte
	for _, b := range frame(true, ws.OpText, []byte(`{"op":"ping","id":1}`)) {
		r.write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	if got := r.readText(); got != `{"op":"pong","id":1}` {
		t.Fatalf("byte by byte: %s", got)
	}
	// fragmented with a ping in the middle
	msg := []byte(`{"op":"ping","id":2}`)
	var buf []byte
	buf = append(buf, frame(false, ws.OpText, msg[:5])...)
	buf = append(buf, frame(true, ws.OpPing, []byte("hi"))...)
	buf = append(buf, frame(false, ws.OpContinuation, msg[5:12])...)
	buf = append(buf, frame(true, ws.OpContinuation, msg[12:])...)
	// and a second whole message in the same write
	buf = append(buf, frame(true, ws.OpText, []byte(`{"op":"ping","id":3}`))...)
	r.write(buf[:7])
	r.write(buf[7:])
	op, p := r.read()
	if op != ws.OpPong || string(p) != "hi" {
		t.Fatalf("want pong hi, got %v %q", op, p)
	}
	if got := r.readText(); got != `{"op":"pong","id":2}` {
		t.Fatalf("fragmented: %s", got)
	}
	if got := r.readText(); got != `{"op":"pong","id":3}` {
		t.Fatalf("pipelined: %s", got)
	}
	// a large message (over 64 KiB, 8-byte length) split in odd pieces
	big := `{"op":"pub","id":4,"subject":"big","ack":true,"data":"` + strings.Repeat("x", 70000) + `"}`
	f := frame(true, ws.OpText, []byte(big))
	for i := 0; i < len(f); i += 9999 {
		end := min(i+9999, len(f))
		r.write(f[i:end])
	}
	if got := r.readText(); got != `{"op":"ack","id":4}` {
		t.Fatalf("big: %s", got)
	}
}

// WebSocket protocol violations close with the matching code.
func TestProtocolViolationsClose(t *testing.T) {
	n := startNode(t, nil, func(c *Config) { c.MaxFrameBytes = 1024 })
	unmasked := []byte{0x81, 0x02, 'h', 'i'}
	cases := []struct {
		name string
		in   []byte
		code int
	}{
		{"unmasked", unmasked, 1002},
		{"reserved bits", func() []byte { b := frame(true, ws.OpText, []byte("x")); b[0] |= 0x40; return b }(), 1002},
		{"bad opcode", frame(true, ws.OpCode(0x3), []byte("x")), 1002},
		{"continuation first", frame(true, ws.OpContinuation, []byte("x")), 1002},
		{"fragmented ping", frame(false, ws.OpPing, []byte("x")), 1002},
		{"big ping", frame(true, ws.OpPing, make([]byte, 126)), 1002},
		{"text in fragment", append(frame(false, ws.OpText, []byte("{")), frame(true, ws.OpText, []byte("{}"))...), 1002},
		{"bad utf8", frame(true, ws.OpText, []byte{0xff, 0xfe}), 1007},
		{"too big", frame(true, ws.OpBinary, make([]byte, 2000)), 1009},
		{"too big fragmented", append(frame(false, ws.OpBinary, make([]byte, 800)), frame(true, ws.OpContinuation, make([]byte, 800))...), 1009},
		{"bad close code", frame(true, ws.OpClose, []byte{0x03, 0xec}), 1002},
		{"close 1-byte", frame(true, ws.OpClose, []byte{0x03}), 1002},
		{"normal close echoed", frame(true, ws.OpClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}), 1000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rawDial(t, n, token(t, "t1", "a"))
			r.write(c.in)
			if code := r.expectClose(); code != c.code {
				t.Fatalf("close code %d, want %d", code, c.code)
			}
			r.expectEOF()
		})
	}
}

// Deadlines: a stalled upgrade, a stalled frame and a silent connection are
// all closed; a silent connection is pinged first.
func TestDeadlines(t *testing.T) {
	n := startNode(t, nil, func(c *Config) {
		c.SweepInterval = 20 * time.Millisecond
		c.HandshakeTimeout = 200 * time.Millisecond
		c.FrameTimeout = 200 * time.Millisecond
		c.HeartbeatInterval = 100 * time.Millisecond
		c.IdleTimeout = 600 * time.Millisecond
	})
	t.Run("half upgrade", func(t *testing.T) {
		conn, err := net.Dial("tcp", n.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte("GET /v1/socket HTTP/1.1\r\nHost: x\r\n"))
		(&rawConn{t: t, conn: conn, br: newReader(conn)}).expectEOF()
	})
	t.Run("half frame", func(t *testing.T) {
		r := rawDial(t, n, token(t, "t1", "a"))
		f := frame(true, ws.OpText, []byte(`{"op":"ping","id":1}`))
		r.write(f[:8])
		if code := r.expectClose(); code != 1008 {
			t.Fatalf("close code %d", code)
		}
	})
	t.Run("idle pinged then closed", func(t *testing.T) {
		r := rawDial(t, n, token(t, "t1", "a"))
		op, _ := r.read()
		if op != ws.OpPing {
			t.Fatalf("want a ping, got %v", op)
		}
		if code := r.expectClose(); code != 1001 {
			t.Fatalf("close code %d", code)
		}
	})
	t.Run("pong keeps alive", func(t *testing.T) {
		r := rawDial(t, n, token(t, "t1", "a"))
		deadline := time.Now().Add(1500 * time.Millisecond)
		for time.Now().Before(deadline) {
			op, p := r.read()
			if op != ws.OpPing {
				t.Fatalf("got %v %q before the deadline", op, p)
			}
			r.write(frame(true, ws.OpPong, p))
		}
	})
	if v := counterValue(t, n, "arq_timeouts_total"); v < 3 {
		t.Fatalf("timeouts counted %v, want >= 3", v)
	}
}

// A burst of small frames arriving behind half a frame is handled, not
// mistaken for one oversized frame.
func TestBurstBehindPartialFrame(t *testing.T) {
	n := startNode(t, nil, func(c *Config) { c.MaxFrameBytes = 256 })
	r := rawDial(t, n, token(t, "t1", "a"))
	var burst []byte
	for i := 0; i < 60; i++ {
		burst = append(burst, frame(true, ws.OpText, []byte(`{"op":"ping","id":`+itoa(i+1)+`}`))...)
	}
	r.write(burst[:5])
	time.Sleep(20 * time.Millisecond)
	r.write(burst[5:])
	for i := 0; i < 60; i++ {
		if got := r.readText(); got != `{"op":"pong","id":`+itoa(i+1)+`}` {
			t.Fatalf("frame %d: %s", i, got)
		}
	}
}

// A healthy stream whose reads keep ending mid-frame is not cut off by the
// frame deadline: the deadline runs per frame.
func TestFrameDeadlineIsPerFrame(t *testing.T) {
	n := startNode(t, nil, func(c *Config) {
		c.SweepInterval = 20 * time.Millisecond
		c.FrameTimeout = 150 * time.Millisecond
	})
	r := rawDial(t, n, token(t, "t1", "a"))
	var stream []byte
	const frames = 60
	for i := 0; i < frames; i++ {
		stream = append(stream, frame(true, ws.OpText, []byte(`{"op":"ping","id":`+itoa(i+1)+`}`))...)
	}
	go func() {
		// 60 writes, 10 ms apart, each ending inside a frame: 600 ms of
		// continuous partial input, four frame timeouts long.
		step := len(stream)/frames + 3
		for off := 0; off < len(stream); off += step {
			r.conn.Write(stream[off:min(off+step, len(stream))])
			time.Sleep(10 * time.Millisecond)
		}
	}()
	for i := 0; i < frames; i++ {
		if got := r.readText(); got != `{"op":"pong","id":`+itoa(i+1)+`}` {
			t.Fatalf("frame %d: %s", i, got)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// Publishes beyond the connection's rate get RATE_LIMIT_EXCEEDED and are
// not routed; the connection stays up.
func TestPublishRateLimit(t *testing.T) {
	n := startNode(t, nil, func(c *Config) { c.PublishRate = 1; c.PublishBurst = 3 })
	r := rawDial(t, n, token(t, "t1", "a"))
	var burst []byte
	for i := 1; i <= 5; i++ {
		burst = append(burst, frame(true, ws.OpText, []byte(`{"op":"pub","id":`+itoa(i)+`,"subject":"s","data":"x","ack":true}`))...)
	}
	r.write(burst)
	for i := 1; i <= 3; i++ {
		if got := r.readText(); got != `{"op":"ack","id":`+itoa(i)+`}` {
			t.Fatalf("pub %d: %s", i, got)
		}
	}
	for i := 4; i <= 5; i++ {
		if got := r.readText(); !strings.Contains(got, `"id":`+itoa(i)+`,"code":"RATE_LIMIT_EXCEEDED"`) {
			t.Fatalf("pub %d: %s", i, got)
		}
	}
	r.send(ws.OpText, `{"op":"ping","id":9}`)
	if got := r.readText(); got != `{"op":"pong","id":9}` {
		t.Fatal(got)
	}
	if v := counterValue(t, n, "arq_limit_hits_total"); v != 2 {
		t.Fatalf("limit hits %v", v)
	}
}
