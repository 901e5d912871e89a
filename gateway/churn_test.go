package gateway

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// TestChurnNoCrossTalk: subscribers connect, read for a moment and go
// away (closing themselves, or making the server close them with a
// protocol violation) while a publisher keeps every subject busy, so
// descriptor numbers are reused all the time. Every frame a client gets
// must be its own (its subject, intact), nothing may panic, and every
// connection must be gone at the end. (The write-after-close guard itself
// is tested directly by TestDirectWriteGuard and TestCloseCallbackOrder:
// its race window is too small for a churn test to hit reliably.)
func TestChurnNoCrossTalk(t *testing.T) {
	const subjects, churners = 32, 48
	n := startNode(t, nil, nil)
	tok := token(t, "acme", "u")
	pub := rawDial(t, n, tok)
	deadline := time.Now().Add(1500 * time.Millisecond)

	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		var batch []byte
		for time.Now().Before(deadline) {
			batch = batch[:0]
			for k := 0; k < 32; k++ {
				s := "x." + strconv.Itoa(rand.IntN(subjects))
				batch = append(batch, frame(true, ws.OpText, []byte(`{"op":"pub","subject":"`+s+`","data":"`+s+`"}`))...)
			}
			if _, err := pub.conn.Write(batch); err != nil {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	go func() { _, _ = io.Copy(io.Discard, pub.br) }() // drain the publisher's socket

	var checked, cycles atomic.Int64
	errs := make(chan string, churners)
	var wg sync.WaitGroup
	for w := 0; w < churners; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			subj := "x." + strconv.Itoa(w%subjects)
			want := `"subject":"` + subj + `","data":"` + subj + `"`
			for i := 0; time.Now().Before(deadline); i++ {
				if msg := churnOnce(n.url, tok, subj, want, i%2 == 0, &checked); msg != "" {
					errs <- msg
					return
				}
				cycles.Add(1)
			}
		}(w)
	}
	wg.Wait()
	_ = pub.conn.Close()
	pubWG.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if v := testutil.ToFloat64(n.gw.metrics.panics); v != 0 {
		t.Errorf("%v panics", v)
	}
	t.Logf("%d connect-read-close cycles, %d messages checked", cycles.Load(), checked.Load())
	if checked.Load() == 0 || cycles.Load() < churners {
		t.Fatalf("too little traffic: %d cycles, %d messages", cycles.Load(), checked.Load())
	}
	waitFor(t, func() bool { return n.gw.reg.count() == 0 })
}

// churnOnce connects, subscribes to subj, checks every message frame it
// reads for a few milliseconds against want, and leaves: by closing the
// socket (selfClose) or by sending an unmasked frame so that the server
// closes it. It returns a description of a wrong frame, or "".
func churnOnce(url, tok, subj, want string, selfClose bool, checked *atomic.Int64) string {
	d := ws.Dialer{Timeout: 5 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})}
	conn, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		return "" // a refused dial under load is not cross-talk
	}
	defer conn.Close()
	if br == nil {
		br = bufio.NewReader(conn)
	}
	if _, err := conn.Write(frame(true, ws.OpText, []byte(`{"op":"sub","id":1,"subject":"`+subj+`"}`))); err != nil {
		return ""
	}
	readUntil := time.Now().Add(time.Duration(1+rand.IntN(5)) * time.Millisecond)
	if !selfClose {
		readUntil = readUntil.Add(20 * time.Millisecond) // read on past the server's close
	}
	sentBad := false
	for {
		if !selfClose && !sentBad && time.Now().Add(20*time.Millisecond).After(readUntil) {
			// An unmasked frame: the server must close with 1002.
			_, _ = conn.Write([]byte{0x81, 0x01, 'x'})
			sentBad = true
		}
		_ = conn.SetReadDeadline(readUntil)
		h, err := ws.ReadHeader(br)
		if err != nil {
			return ""
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return ""
		}
		if h.Masked || !h.Fin {
			return "bad frame header from the server"
		}
		if h.OpCode != ws.OpText {
			continue
		}
		s := string(p)
		switch {
		case strings.HasPrefix(s, `{"op":"msg"`):
			if !strings.Contains(s, want) {
				return "subscriber of " + subj + " got " + s
			}
			checked.Add(1)
		case strings.HasPrefix(s, `{"op":"welcome"`), strings.HasPrefix(s, `{"op":"ack"`), strings.HasPrefix(s, `{"op":"error"`):
		default:
			return "unexpected frame " + s
		}
	}
}

// After forgetFd (what onClose does) a direct write must not reach the
// descriptor.
func TestDirectWriteGuard(t *testing.T) {
	f := newFlushFixture(t, 1)
	c := f.conns[0]
	w := new(writer)
	w.iov[0].Base = &[]byte("x")[0]
	w.iov[0].SetLen(1)
	if n, err := c.writev(&w.iov, 1); n != 1 || err != nil {
		t.Fatalf("open: writev = %d, %v", n, err)
	}
	f.read(t, 0)
	c.forgetFd()
	if n, err := c.writev(&w.iov, 1); n != 0 || err != errFdGone {
		t.Fatalf("after forgetFd: writev = %d, %v; want 0, errFdGone", n, err)
	}
	if got := f.read(t, 0); got != 0 {
		t.Fatalf("%d bytes reached the socket after forgetFd", got)
	}
}

// The guard relies on netpoll running the gateway's close callback before
// it closes the descriptor: check that the descriptor is still open when
// onClose runs, for closes from either side.
func TestCloseCallbackOrder(t *testing.T) {
	var calls, closedEarly atomic.Int64
	testHookOnClose = func(c *conn) {
		calls.Add(1)
		if _, err := unix.FcntlInt(uintptr(c.fd), unix.F_GETFD, 0); err != nil {
			closedEarly.Add(1)
		}
	}
	t.Cleanup(func() { testHookOnClose = nil })
	n := startNode(t, nil, nil)
	tok := token(t, "acme", "u")
	for i := 0; i < 20; i++ {
		r := rawDial(t, n, tok)
		if i%2 == 0 {
			r.conn.Close() // the client leaves
		} else {
			r.write([]byte{0x81, 0x01, 'x'}) // unmasked: the server closes
			r.expectClose()
		}
	}
	waitFor(t, func() bool { return calls.Load() == 20 })
	if v := closedEarly.Load(); v != 0 {
		t.Fatalf("%d of 20 close callbacks ran after netpoll closed the descriptor", v)
	}
}
