package bench

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/gateway"
)

var secret = []byte("bench-secret-bench-secret-bench-secret!!")

func startGateway(tb testing.TB) string {
	url, _ := startGatewayReg(tb)
	return url
}

// startGatewayReg is startGateway, also returning the metrics registry.
func startGatewayReg(tb testing.TB) (string, *prometheus.Registry) {
	tb.Helper()
	v, _ := auth.NewVerifier(secret)
	reg := prometheus.NewRegistry()
	g, err := gateway.New(gateway.Config{Listen: "127.0.0.1:0", Verifier: v, Registerer: reg,
		OutboundBufferBytes: 8 << 20, PublishRate: -1})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := g.Listen()
	if err != nil {
		tb.Fatal(err)
	}
	if err := g.Serve(ln); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	return "ws://" + ln.Addr().String() + gateway.SocketPath, reg
}

// counter returns the value of the unlabelled counter name in reg.
func counter(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	tb.Fatalf("no counter %s", name)
	return 0
}

// wsDial upgrades with a fresh token (JSON codec) and returns the conn and
// its reader positioned after WELCOME.
func wsDial(tb testing.TB, url, user string) (net.Conn, *bufio.Reader) {
	tok, _ := auth.Mint(secret, auth.MintOptions{Tenant: "bench", User: user, TTL: time.Hour})
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})}
	conn, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 64<<10)
	}
	readFrame(tb, br) // welcome
	return conn, br
}

func readFrame(tb testing.TB, br *bufio.Reader) {
	h, err := ws.ReadHeader(br)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := br.Discard(int(h.Length)); err != nil {
		tb.Fatal(err)
	}
}

func clientFrame(op ws.OpCode, p []byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	w := &byteWriter{}
	ws.WriteHeader(w, h)
	q := append([]byte(nil), p...)
	ws.Cipher(q, h.Mask, 0)
	return append(w.b, q...)
}

// countFrames reads frames until the connection ends, counting them.
func countFrames(br *bufio.Reader, n *atomic.Int64) {
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return
		}
		if _, err := br.Discard(int(h.Length)); err != nil {
			return
		}
		n.Add(1)
	}
}

type byteWriter struct{ b []byte }

func (w *byteWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// BenchmarkFanoutLoopback: one publisher, N subscribers, real sockets. One
// op is one published message delivered to all N subscribers; the
// deliveries/s metric is the fan-out throughput.
func BenchmarkFanoutLoopback(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			url, reg := startGatewayReg(b)
			var received atomic.Int64
			var wg sync.WaitGroup
			conns := make([]net.Conn, n)
			for i := 0; i < n; i++ {
				c, br := wsDial(b, url, "s"+strconv.Itoa(i))
				conns[i] = c
				c.Write(clientFrame(ws.OpText, []byte(`{"op":"sub","id":1,"subject":"fan.out"}`)))
				readFrame(b, br) // ack
				wg.Add(1)
				go func() {
					defer wg.Done()
					countFrames(br, &received)
				}()
			}
			pub, pbr := wsDial(b, url, "pub")
			go io.Copy(io.Discard, pbr)
			frame := clientFrame(ws.OpText, []byte(`{"op":"pub","subject":"fan.out","data":"`+string(make([]byte, 0))+`0123456789012345678901234567890123456789012345678901234567890123"}`))
			batch := make([]byte, 0, len(frame)*16)
			for i := 0; i < 16; i++ {
				batch = append(batch, frame...)
			}
			writes0 := counter(b, reg, "arq_socket_writes_total")
			b.ResetTimer()
			start := time.Now()
			sent := 0
			for sent < b.N {
				k := min(16, b.N-sent)
				pub.Write(batch[:k*len(frame)])
				sent += k
				// keep at most ~256 messages in flight per subscriber
				for int64(sent-256)*int64(n) > received.Load() {
					time.Sleep(50 * time.Microsecond)
				}
			}
			want := int64(b.N) * int64(n)
			deadline := time.Now().Add(60 * time.Second)
			for received.Load() < want && time.Now().Before(deadline) {
				time.Sleep(100 * time.Microsecond)
			}
			el := time.Since(start)
			b.StopTimer()
			if got := received.Load(); got != want {
				b.Fatalf("received %d of %d", got, want)
			}
			b.ReportMetric(float64(want)/el.Seconds(), "deliveries/s")
			b.ReportMetric(float64(want)/(counter(b, reg, "arq_socket_writes_total")-writes0), "frames/write")
			pub.Close()
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		})
	}
}
