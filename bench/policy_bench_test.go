package bench

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/policy"
)

// BenchmarkPublishPolicy: publishes through a real gateway to one
// subscriber, without a policy and with the example policies (size cap,
// ACL, malware scan of the payload) on every publish. Compare msgs/s of the
// two sub-benchmarks from one run.
func BenchmarkPublishPolicy(b *testing.B) {
	for _, withPolicy := range []bool{false, true} {
		name := "policy=none"
		if withPolicy {
			name = "policy=examples"
		}
		b.Run(name, func(b *testing.B) {
			v, _ := auth.NewVerifier(secret)
			cfg := gateway.Config{Listen: "127.0.0.1:0", Verifier: v, Registerer: prometheus.NewRegistry(), OutboundBufferBytes: 8 << 20, PublishRate: -1}
			if withPolicy {
				eng, err := policy.New(context.Background(), policy.Config{Dir: "../policies", ReloadInterval: -1, Timeout: 50 * time.Millisecond,
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					b.Fatal(err)
				}
				defer eng.Close(context.Background())
				cfg.Policy = eng
			}
			g, err := gateway.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ln, _ := g.Listen()
			g.Serve(ln)
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				g.Shutdown(ctx)
			}()
			url := "ws://" + ln.Addr().String() + gateway.SocketPath
			sub, sbr := wsDial(b, url, "sub")
			defer sub.Close()
			sub.Write(clientFrame(ws.OpText, []byte(`{"op":"sub","id":1,"subject":"room.>"}`)))
			readFrame(b, sbr)
			var received atomic.Int64
			go countFrames(sbr, &received)
			pub, pbr := wsDial(b, url, "pub")
			defer pub.Close()
			go io.Copy(io.Discard, pbr)
			payload := make([]byte, 1024)
			for i := range payload {
				payload[i] = 'a' + byte(i%26)
			}
			frame := clientFrame(ws.OpText, []byte(`{"op":"pub","subject":"room.lobby","data":"`+string(payload)+`"}`))
			var batch []byte
			for i := 0; i < 32; i++ {
				batch = append(batch, frame...)
			}
			b.ResetTimer()
			start := time.Now()
			sent := 0
			for sent < b.N {
				k := min(32, b.N-sent)
				pub.Write(batch[:k*len(frame)])
				sent += k
				for int64(sent-1024) > received.Load() {
					time.Sleep(20 * time.Microsecond)
				}
			}
			deadline := time.Now().Add(30 * time.Second)
			for received.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Microsecond)
			}
			el := time.Since(start)
			b.StopTimer()
			if got := received.Load(); got != int64(b.N) {
				b.Fatalf("received %d of %d", got, b.N)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
		})
	}
}
