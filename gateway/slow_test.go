package gateway

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/client"
)

// One stalled subscriber among 100: the others receive every message, the
// stalled one is closed with SLOW_CONSUMER once its budget is full, and no
// connection's queued output ever exceeds the budget.
func TestSlowConsumerAmongHundred(t *testing.T) {
	const budget = 256 << 10
	n := startNode(t, nil, func(c *Config) { c.OutboundBufferBytes = budget })

	// The stalled client: a small receive buffer, and it never reads.
	d := ws.Dialer{
		Timeout: 5 * time.Second,
		Header:  ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + token(t, "t1", "stalled")}}),
		NetDial: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
		}}).DialContext,
	}
	stalled, br, _, err := d.Dial(context.Background(), n.url)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if br == nil {
		br = bufio.NewReader(stalled)
	}
	sr := &rawConn{t: t, conn: stalled, br: br}
	sr.readText() // welcome
	sr.send(ws.OpText, `{"op":"sub","id":1,"subject":"feed"}`)
	if got := sr.readText(); got != `{"op":"ack","id":1}` {
		t.Fatal(got)
	}

	const readers = 99
	subs := make([]*client.Subscription, readers)
	for i := range subs {
		c := dial(t, n, "t1", "r", client.Protobuf)
		s, err := c.Subscribe(ctx(t), "feed")
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = s
	}
	pub := dial(t, n, "t1", "pub", client.Protobuf)

	const msgs = 400
	payload := []byte(strings.Repeat("x", 8<<10)) // 400 x 8 KiB = 3.2 MiB per subscriber
	var wg sync.WaitGroup
	counts := make([]atomic.Int64, readers)
	for i, s := range subs {
		wg.Add(1)
		go func(i int, s *client.Subscription) {
			defer wg.Done()
			for counts[i].Load() < msgs {
				select {
				case _, ok := <-s.C:
					if !ok {
						return // closed: this reader was dropped
					}
					counts[i].Add(1)
				case <-time.After(20 * time.Second):
					return
				}
			}
		}(i, s)
	}
	// The publisher stays within lead messages of the slowest healthy
	// reader (an ACK no longer waits for the fan-out's writes), so a
	// healthy reader's queue stays far under the budget however busy the
	// machine is, while the stalled one, which never reads, overruns it.
	const lead = 8 // 8 x 8 KiB = 64 KiB, a quarter of the budget
	maxQueued := 0
	deadline := time.Now().Add(60 * time.Second) // a dropped reader fails below, not here
	for i := 0; i < msgs; i++ {
		for {
			slowest := int64(msgs)
			for r := range counts {
				slowest = min(slowest, counts[r].Load())
			}
			if int64(i)-slowest <= lead || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		if err := pub.PublishAck(ctx(t), "feed", payload, client.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		if q := n.gw.maxQueuedBytes(); q > maxQueued {
			maxQueued = q
		}
	}
	wg.Wait()
	for i := range counts {
		if c := counts[i].Load(); c != msgs {
			t.Fatalf("reader %d received %d of %d", i, c, msgs)
		}
	}
	if maxQueued > budget {
		t.Fatalf("a connection queued %d bytes, budget %d", maxQueued, budget)
	}
	if v := counterValue(t, n, "arq_slow_consumers_total"); v != 1 {
		t.Fatalf("slow consumers counted %v, want 1", v)
	}
	// Its full socket sent the writer down the waiting path.
	if v := counterValue(t, n, "arq_write_stalls_total"); v < 1 {
		t.Fatalf("write stalls counted %v, want at least 1", v)
	}
	// The stalled client resumes reading: after what was in flight it gets
	// SLOW_CONSUMER and a close 1008.
	sawError := false
	for {
		op, p := sr.read()
		if op == ws.OpText && strings.Contains(string(p), `"code":"SLOW_CONSUMER"`) {
			sawError = true
		}
		if op == ws.OpClose {
			if code := int(p[0])<<8 | int(p[1]); code != closePolicyViolated {
				t.Fatalf("close code %d", code)
			}
			break
		}
	}
	if !sawError {
		t.Fatal("no SLOW_CONSUMER error frame before the close")
	}
}

// maxQueuedBytes returns the largest outbound queue of any connection.
func (g *Gateway) maxQueuedBytes() int {
	m := 0
	g.reg.each(func(c *conn) {
		c.mu.Lock()
		if c.outBytes > m {
			m = c.outBytes
		}
		c.mu.Unlock()
	})
	return m
}

// One message larger than the outbound budget reaches an idle, reading
// subscriber: it is not a slow consumer.
func TestLargeMessageIsNotSlowConsumer(t *testing.T) {
	n := startNode(t, nil, func(c *Config) {
		c.OutboundBufferBytes = 64 << 10
		c.MaxFrameBytes = 512 << 10
	})
	sub := dial(t, n, "t1", "s", client.JSON)
	s, err := sub.Subscribe(ctx(t), "big")
	if err != nil {
		t.Fatal(err)
	}
	pub := dial(t, n, "t1", "p", client.Protobuf)
	payload := make([]byte, 300<<10) // base64 for JSON: 400 KiB > budget
	if err := pub.PublishAck(ctx(t), "big", payload, client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, s); len(m.Data) != len(payload) {
		t.Fatalf("got %d bytes", len(m.Data))
	}
	if v := counterValue(t, n, "arq_slow_consumers_total"); v != 0 {
		t.Fatalf("slow consumers %v", v)
	}
}
