// Command tlscost measures what serving wss:// costs against ws:// on one
// arq serve: handshakes per second (sequential and 32 in flight), the
// server's RSS per idle connection (slope between two sizes) and a small
// fan-out's deliveries per second, for each scheme in one run.
//
//	go build -o /tmp/arq ./cmd/arq && go run ./bench/tlscost -arq-bin /tmp/arq
//
// Loopback only; every loop is bounded in count and time.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/testcert"
)

func main() {
	bin := flag.String("arq-bin", ".bin/arq", "arq binary")
	small := flag.Int("small", 500, "idle connections, first size")
	large := flag.Int("large", 2500, "idle connections, second size")
	handshakes := flag.Int("handshakes", 1000, "handshakes per measurement")
	subs := flag.Int("subs", 200, "fan-out subscribers")
	msgs := flag.Int("msgs", 2000, "fan-out messages (one per frame, acked)")
	flag.Parse()
	for _, scheme := range []string{"ws", "wss"} {
		if err := run(*bin, scheme, *small, *large, *handshakes, *subs, *msgs); err != nil {
			fmt.Fprintln(os.Stderr, "tlscost:", err)
			os.Exit(1)
		}
	}
}

func run(bin, scheme string, small, large, handshakes, subs, msgs int) error {
	dir, err := os.MkdirTemp("", "tlscost")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	args := []string{"serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
	var tc *tls.Config
	if scheme == "wss" {
		pool, err := writeCert(dir)
		if err != nil {
			return err
		}
		cfg := filepath.Join(dir, "tls.toml")
		os.WriteFile(cfg, []byte("[server]\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[limits]\npublish_rate = -1\n"), 0o600)
		args = append(args, "--config", cfg)
		tc = &tls.Config{RootCAs: pool, ClientSessionCache: nil}
	} else {
		cfg := filepath.Join(dir, "plain.toml")
		os.WriteFile(cfg, []byte("[limits]\npublish_rate = -1\n"), 0o600)
		args = append(args, "--config", cfg)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := ""
	sc := bufio.NewScanner(out)
	re := regexp.MustCompile(`websocket: (wss?://\S+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			url = m[1]
		}
		if strings.Contains(sc.Text(), "try:") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		return err
	}
	tok, _ := auth.Mint(secret, auth.MintOptions{Tenant: "dev", User: "u", TTL: time.Hour})
	dial := func(ctx context.Context) (*client.Client, error) {
		return client.Dial(ctx, client.Options{URL: url, Token: tok, TLSConfig: tc, Codec: client.JSON})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Handshakes: sequential, then 32 in flight (each a new TCP and, for
	// wss, a full TLS handshake: no session resumption).
	start := time.Now()
	for i := 0; i < handshakes; i++ {
		c, err := dial(ctx)
		if err != nil {
			return err
		}
		c.Close()
	}
	seq := float64(handshakes) / time.Since(start).Seconds()
	start = time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	next := atomic.Int64{}
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(handshakes) {
				c, err := dial(ctx)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	par := float64(handshakes) / time.Since(start).Seconds()
	time.Sleep(time.Second)

	// Idle connections, each subscribed: RSS at two sizes.
	var conns []*client.Client
	open := func(n int) error {
		for len(conns) < n {
			c, err := dial(ctx)
			if err != nil {
				return err
			}
			if _, err := c.Subscribe(ctx, "idle."+strconv.Itoa(len(conns))); err != nil {
				return err
			}
			conns = append(conns, c)
		}
		time.Sleep(2 * time.Second)
		return nil
	}
	if err := open(small); err != nil {
		return err
	}
	r1 := rss(cmd.Process.Pid)
	if err := open(large); err != nil {
		return err
	}
	r2 := rss(cmd.Process.Pid)
	perConn := float64(r2-r1) / float64(large-small)
	for _, c := range conns {
		c.Close()
	}
	time.Sleep(time.Second)

	// Fan-out: subs subscribers, one publisher, one message per frame.
	var got atomic.Int64
	var fan []*client.Client
	for i := 0; i < subs; i++ {
		c, err := dial(ctx)
		if err != nil {
			return err
		}
		s, err := c.Subscribe(ctx, "fan.x")
		if err != nil {
			return err
		}
		go func() {
			for range s.C {
				got.Add(1)
			}
		}()
		fan = append(fan, c)
	}
	pub, err := dial(ctx)
	if err != nil {
		return err
	}
	want := int64(subs * msgs)
	start = time.Now()
	for i := 0; i < msgs; i++ {
		if err := pub.Publish(ctx, "fan.x", []byte("0123456789012345678901234567890123456789012345678901234567890123")); err != nil {
			return err
		}
	}
	for got.Load() < want && time.Since(start) < time.Minute {
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start).Seconds()
	for _, c := range fan {
		c.Close()
	}
	pub.Close()
	fmt.Printf("%-4s handshakes/s sequential %.0f, 32 in flight %.0f (failed %d); RSS per idle subscribed connection %.0f B (%d->%d conns: %d->%d KiB); fan-out %d subs x %d msgs: %.0f deliveries/s (%d of %d)\n",
		scheme, seq, par, failed.Load(), perConn, small, large, r1/1024, r2/1024, subs, msgs, float64(got.Load())/el, got.Load(), want)
	return nil
}

// rss returns the process's resident set in bytes.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func writeCert(dir string) (*x509.CertPool, error) {
	p, err := testcert.New()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), p.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), p.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	return p.Pool, nil
}
