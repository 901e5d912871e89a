package main

import (
	"bufio"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOutOfDescriptorsRecovers runs arq serve with a soft descriptor limit
// just above what it holds, opens more connections than fit, and checks
// that the failed accepts are counted, that at most one goroutine retries
// them (netpoll patch 5: v0.7.2 could start one per failure) and that the
// listener serves again once descriptors are free.
func TestOutOfDescriptorsRecovers(t *testing.T) {
	bin := buildArq(t)
	s := startServe(t, bin, t.TempDir())
	pid := s.cmd.Process.Pid
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(fds) + 16)
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(s.wsURL)
	if err != nil {
		t.Fatal(err)
	}
	goroutines := func() float64 { return scrapeValue(t, s.adminURL, "go_goroutines") }
	before := goroutines()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range 64 {
		c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for scrapeValue(t, s.adminURL, "arq_accept_out_of_fds_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no failed accept counted with the descriptors exhausted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let failures repeat
	if g := goroutines(); g > before+20 {
		t.Fatalf("%v goroutines with the descriptors exhausted, %v before: retries pile up", g, before)
	}
	for _, c := range conns {
		_ = c.Close()
	}
	conns = nil
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
	// The listener serves again: an HTTP request gets an answer.
	deadline = time.Now().Add(10 * time.Second)
	for {
		status, err := httpStatusLine(u.Host)
		if err == nil && strings.HasPrefix(status, "HTTP/1.1 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener did not recover: %q, %v", status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpStatusLine sends a plain GET (not an upgrade) to addr and returns the
// status line of the answer.
func httpStatusLine(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("GET /v1/socket HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// scrapeValue scrapes adminURL's /metrics for the first sample of name
// (0 when absent), over a kept-alive connection (scrapeClient): a scrape
// must not need a new descriptor while the server has none.
func scrapeValue(t *testing.T, adminURL, name string) float64 {
	t.Helper()
	f := scrape(t, adminURL+"/metrics")[name]
	if f == nil || len(f.GetMetric()) == 0 {
		return 0
	}
	m := f.GetMetric()[0]
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}
