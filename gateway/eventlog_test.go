package gateway

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRefusedUpgradesLoggedAndLimited: a refused upgrade is logged with its
// reason and remote address; a flood of them is held to the rate, and
// what was held back is counted on the next line.
func TestRefusedUpgradesLoggedAndLimited(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n := startNode(t, nil, func(c *Config) { c.Logger = log })
	refuse := func() {
		c, err := net.Dial("tcp", n.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("GET /v1/socket?token=not-a-token HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
		b := make([]byte, 512)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(b)
	}
	const flood = 100
	for range flood {
		refuse()
	}
	lines := strings.Count(buf.String(), `"msg":"upgrade refused"`)
	if lines == 0 || lines > logBurst+5 {
		t.Fatalf("%d refused upgrades logged %d lines; want 1 to about %d", flood, lines, logBurst)
	}
	if !strings.Contains(buf.String(), `"reason":"malformed"`) || !strings.Contains(buf.String(), `"remote":"127.0.0.1:`) {
		t.Fatalf("log lacks reason or remote:\n%.600s", buf.String())
	}
	time.Sleep(time.Duration(float64(time.Second) / logRate * 2))
	refuse()
	if !strings.Contains(buf.String(), `"suppressed":`) {
		t.Fatalf("no count of the lines held back:\n%.600s", buf.String()[max(0, len(buf.String())-600):])
	}
}
