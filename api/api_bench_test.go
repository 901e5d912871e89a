package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkAPIPublish: publishes through one keep-alive HTTP connection,
// one request at a time (the way a backend's loop calls it), to a node with
// one WebSocket subscriber per node; batch=100 sends 100 publish commands
// per request. msgs/s counts publishes.
func BenchmarkAPIPublish(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			cl := startClusterB(b)
			s := subscribeB(b, cl, "bench.>")
			go func() {
				for range s.C {
				}
			}()
			var body []byte
			path := "/api/v1/publish"
			if batch == 1 {
				body = []byte(`{"tenant":"acme","subject":"bench.x","data":"0123456789012345678901234567890123456789012345678901234567890123"}`)
			} else {
				path = "/api/v1/batch"
				var sb strings.Builder
				sb.WriteString(`{"commands":[`)
				for i := range batch {
					if i > 0 {
						sb.WriteByte(',')
					}
					sb.WriteString(`{"method":"publish","params":{"tenant":"acme","subject":"bench.x","data":"0123456789012345678901234567890123456789012345678901234567890123"}}`)
				}
				sb.WriteString(`]}`)
				body = []byte(sb.String())
			}
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest("POST", cl.api.URL+path, bytes.NewReader(body))
				req.Header.Set("Authorization", "apikey "+acmeKey)
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
