package gateway

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/pb"
)

// FuzzClientInput sends arbitrary bytes to an upgraded connection, as one
// to three writes, in either codec, then half-closes and reads until the
// server closes. Whatever the bytes, the gateway must not panic (a recovered
// panic closes the connection with 1011 and counts in arq_panics_total, which
// must stay 0), must close the connection in the end, and must go on serving
// others (a fresh connection still gets its pong).
//
//	go test ./gateway -run '^$' -fuzz FuzzClientInput -fuzztime 2m
func FuzzClientInput(f *testing.F) {
	frames := func(fs ...[]byte) []byte {
		var b []byte
		for _, x := range fs {
			b = append(b, x...)
		}
		return b
	}
	text := func(s string) []byte { return frame(true, ws.OpText, []byte(s)) }
	bin := func(cf *pb.ClientFrame) []byte {
		p, err := cf.MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		return frame(true, ws.OpBinary, p)
	}
	f.Add(frames(text(`{"op":"sub","id":1,"subject":"a.*"}`), text(`{"op":"pub","id":2,"subject":"a.b","data":"x","ack":true}`),
		text(`{"op":"unsub","id":3,"subject":"a.*"}`), text(`{"op":"ping","id":4}`)), uint16(5), uint16(40), false)
	f.Add(frames(bin(&pb.ClientFrame{Op: pb.Op_OP_SUB, Id: 1, Subject: "a.>"}),
		bin(&pb.ClientFrame{Op: pb.Op_OP_PUB, Id: 2, Subject: "a.b", Data: []byte{0, 1, 2}, Ack: true})), uint16(3), uint16(9), true)
	f.Add(frames(frame(false, ws.OpText, []byte(`{"op":"pi`)), frame(true, ws.OpContinuation, []byte(`ng","id":5}`))), uint16(0), uint16(0), false)
	f.Add(frames(text(`{"op":"pub","subject":"a.b","data_b64":"!!"}`), text(`[1,2]`), text("\xff\xfe")), uint16(1), uint16(2), false)
	f.Add(frames(frame(true, ws.OpPing, []byte("hi")), frame(true, ws.OpClose, []byte{0x03, 0xe8, 'b', 'y', 'e'})), uint16(2), uint16(4), false)
	f.Add([]byte{0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint16(1), uint16(3), false) // huge length
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, uint16(0), uint16(0), false)                        // unmasked
	f.Add(bin(&pb.ClientFrame{Op: pb.Op(99), Id: 7}), uint16(0), uint16(0), true)

	n := startNode(f, nil, func(c *Config) { c.MaxFrameBytes = 64 << 10 })
	tok := token(f, "fuzz", "fuzzer")
	dial := func(t *testing.T, proto bool) (net.Conn, *bufio.Reader) {
		protocol := SubprotocolJSON
		if proto {
			protocol = SubprotocolProto
		}
		conn, br := wsDial(t, n, tok, protocol)
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := ws.ReadHeader(br); err != nil { // the WELCOME's header
			t.Fatalf("welcome: %v", err)
		}
		return conn, br
	}

	// Still serving once the inputs are done: a fresh connection gets its
	// pong. (Cleanups run last first: this one before the node stops.)
	f.Cleanup(func() {
		r := rawDial(f, n, tok)
		r.send(ws.OpText, `{"op":"ping","id":1}`)
		if got := r.readText(); got != `{"op":"pong","id":1}` {
			f.Errorf("after the fuzz inputs: %s", got)
		}
	})
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint16, proto bool) {
		if len(data) > 256<<10 {
			return
		}
		conn, br := dial(t, proto)
		defer func() {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // no TIME_WAIT per iteration
			}
			conn.Close()
		}()
		a := min(int(cut1), len(data))
		b := min(a+int(cut2), len(data))
		for _, part := range [][]byte{data[:a], data[a:b], data[b:]} {
			if len(part) == 0 {
				continue
			}
			if _, err := conn.Write(part); err != nil {
				break // the server closed already: fine
			}
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		// The server handles what it got, then closes on our FIN.
		if _, err := io.Copy(io.Discard, br); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the connection was not closed within 10 s of the client's FIN")
			}
		}
		if v := counterValue(t, n, "arq_panics_total"); v != 0 {
			t.Fatalf("arq_panics_total = %v after input %q (proto %v)", v, data, proto)
		}
	})

}

// FuzzUpgradeRequest sends arbitrary bytes as the opening request of a
// connection (and whatever follows it). The gateway must answer or close
// without a panic, and close in the end.
//
//	go test ./gateway -run '^$' -fuzz FuzzUpgradeRequest -fuzztime 2m
func FuzzUpgradeRequest(f *testing.F) {
	n := startNode(f, nil, nil)
	tok := token(f, "fuzz", "fuzzer")
	upgrade := func(target, extra string) []byte {
		return []byte("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n")
	}
	f.Add(upgrade(SocketPath, "Authorization: Bearer "+tok+"\r\n"))
	f.Add(upgrade(SocketPath+"?token="+tok, "Sec-WebSocket-Protocol: "+SubprotocolProto+"\r\n"))
	f.Add(append(upgrade(SocketPath+"?token="+tok, ""), frame(true, ws.OpText, []byte(`{"op":"ping","id":1}`))...))
	f.Add(upgrade(SocketPath, "Authorization: Bearer x.y.z\r\n"))
	f.Add(upgrade("/elsewhere", ""))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")) // a TLS ClientHello
	f.Add([]byte("GET " + SocketPath + "?token=%zz HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Cleanup(func() {
		r := rawDial(f, n, tok)
		r.send(ws.OpText, `{"op":"ping","id":1}`)
		if got := r.readText(); got != `{"op":"pong","id":1}` {
			f.Errorf("after the fuzz inputs: %s", got)
		}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		conn, err := net.Dial("tcp", n.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}()
		_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
		_, _ = conn.Write(data)
		_ = conn.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, conn); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the connection was not closed within 15 s of the client's FIN")
			}
		}
		if v := counterValue(t, n, "arq_panics_total"); v != 0 {
			t.Fatalf("arq_panics_total = %v after %q", v, data)
		}
	})
}
