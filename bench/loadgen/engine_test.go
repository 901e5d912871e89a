//go:build linux

package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// TestEngineBare runs the lean engine against a minimal server speaking
// the bare protocol: handshake, subscribe, then batches of messages (with
// one number skipped and one repeated) and a ping, all parsed in place.
func TestEngineBare(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const conns, msgs = 20, 500
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := ws.Upgrade(c); err != nil {
					return
				}
				_ = wsutil.WriteServerText(c, []byte("W"))
				if m, err := wsutil.ReadClientText(c); err != nil || string(m[:2]) != "S " {
					return
				}
				_ = wsutil.WriteServerText(c, []byte("A"))
				// Wait until the test publishes (all connections ready).
				time.Sleep(200 * time.Millisecond)
				var batch []byte
				p := newPayload(64)
				for i := range uint64(msgs) {
					if i == 100 {
						continue // lost
					}
					fillPayload(p, time.Now().UnixNano())
					fillSeq(p, i)
					batch = append(batch, serverFrame(t, true, ws.OpText, append([]byte("M "), p...))...)
					if i == 200 {
						batch = append(batch, serverFrame(t, true, ws.OpText, append([]byte("M "), p...))...) // duplicate
						batch = append(batch, serverFrame(t, true, ws.OpPing, []byte("x"))...)
					}
					if len(batch) > 3000 {
						_, _ = c.Write(batch[:1500]) // split inside a frame
						_, _ = c.Write(batch[1500:])
						batch = batch[:0]
					}
				}
				_, _ = c.Write(batch)
				// Read the pong, then hold until the client closes.
				_, _, _ = wsutil.ReadClientData(c)
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	var hs handshakeStats
	var subs subStats
	tg := &target{Kind: kindBare, URLs: []string{"ws://" + ln.Addr().String() + "/"}, Timeout: 5 * time.Second,
		SrcIPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
	e, err := newEngine(tg, engineOpts{Loops: 2, RBuf: 4096, Sample: 1, HS: &hs, Subs: &subs})
	if err != nil {
		t.Fatal(err)
	}
	e.ramp(context.Background(), 0, conns, 0, 8, func(int) string { return "x" }, "test", 0)
	if hs.OK.Load() != conns || hs.Failed.Load() != 0 {
		t.Fatalf("ok %d failed %d: %v", hs.OK.Load(), hs.Failed.Load(), hs.errors())
	}
	want := int64(conns * msgs) // msgs-1 sent, one duplicated
	deadline := time.Now().Add(10 * time.Second)
	for subs.Delivered.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := subs.Delivered.Load(); got != want {
		t.Fatalf("delivered %d, want %d", got, want)
	}
	if g, b := subs.Gaps.Load(), subs.Backward.Load(); g != conns || b != conns {
		t.Fatalf("gaps %d backward %d, want %d each", g, b, conns)
	}
	ss := e.seqSummary(func(int) uint64 { return msgs })
	if ss["lost"].(uint64) != conns || ss["subscribers_with_loss"].(uint64) != conns {
		t.Fatalf("seq summary %v", ss)
	}
	if n := subs.Lat.Count(); n != uint64(conns*msgs) {
		t.Fatalf("latency samples %d", n)
	}
	e.close()
	ln.Close()
	wg.Wait()
}
