package bench

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/auth"
)

// BenchmarkHandshakeLoopback: 16 dialers in parallel, each op one TCP
// connect + upgrade + JWT check + WELCOME read + subscribe + ACK, through a
// real gateway on loopback (source addresses 127.0.0.2-5). Reports
// handshakes/s and the p99 latency of one handshake.
func BenchmarkHandshakeLoopback(b *testing.B) {
	url := startGateway(b)
	tok, _ := auth.Mint(secret, auth.MintOptions{Tenant: "bench", User: "hs", TTL: time.Hour})
	sub := clientFrame(ws.OpText, []byte(`{"op":"sub","id":1,"subject":"hs.x"}`))
	const workers = 16
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	conns := make([]net.Conn, 0, b.N)
	next := make(chan struct{}, b.N)
	for i := 0; i < b.N; i++ {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}}),
				NetDial: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+w%4))}}).DialContext}
			for range next {
				st := time.Now()
				c, br, _, err := d.Dial(context.Background(), url)
				if err != nil {
					b.Error(err)
					return
				}
				if br == nil {
					br = bufio.NewReaderSize(c, 512)
				}
				readFrame(b, br) // welcome
				c.Write(sub)
				readFrame(b, br) // ack
				el := time.Since(st)
				mu.Lock()
				lat = append(lat, el)
				if len(conns) < 8000 { // stay under the 20,000-file limit
					conns = append(conns, c)
				} else {
					c.Close()
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	total := time.Since(start)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if n := len(lat); n > 0 {
		b.ReportMetric(float64(n)/total.Seconds(), "handshakes/s")
		b.ReportMetric(float64(lat[n*99/100].Microseconds()), "p99-us")
	}
	for _, c := range conns {
		c.Close()
	}
}
