package gateway

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"
)

// TestAcceptedSocketReady checks the patched netpoll listener (see
// third_party/netpoll/ARQONBUS.md, patch 2): a socket it accepts is
// non-blocking, close-on-exec and has TCP_NODELAY, inherited from the
// listener, without the per-connection fcntl and setsockopt calls that
// connection.init used to make.
func TestAcceptedSocketReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nln, err := netpoll.ConvertListener(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer nln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var nc net.Conn
	// The listener is non-blocking: Accept returns nil until the peer is in.
	waitFor(t, func() bool {
		nc, err = nln.Accept()
		return err != nil || nc != nil
	})
	if err != nil {
		t.Fatalf("accept: %v, %v", nc, err)
	}
	fd := nc.(interface{ Fd() int }).Fd()
	defer unix.Close(fd)
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("accepted socket blocking (flags %#x, %v)", fl, err)
	}
	fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || fdfl&unix.FD_CLOEXEC == 0 {
		t.Errorf("accepted socket not close-on-exec (%#x, %v)", fdfl, err)
	}
	if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
		t.Errorf("accepted socket without TCP_NODELAY (%d, %v)", v, err)
	}
}

// TestNetpollReadWaitWakes checks netpoll patch 4 (trigger channels made by
// the first wait): a handler that blocks for more bytes than have arrived,
// with and without a read timeout, is woken by the bytes that complete them.
// (The write side's wait is exercised by TestSlowConsumerAmongHundred, whose
// stalled socket sends a writer through netpoll's waiting flush.)
func TestNetpollReadWaitWakes(t *testing.T) {
	for _, timeout := range []time.Duration{0, 5 * time.Second} {
		t.Run(fmt.Sprintf("timeout=%v", timeout), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			nln, err := netpoll.ConvertListener(ln)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan string, 1)
			loop, err := netpoll.NewEventLoop(func(_ context.Context, c netpoll.Connection) error {
				if timeout > 0 {
					_ = c.SetReadTimeout(timeout)
				}
				b, err := c.Reader().Next(20) // more than the first write
				if err != nil {
					got <- "error: " + err.Error()
					return err
				}
				got <- string(b)
				return c.Reader().Release()
			})
			if err != nil {
				t.Fatal(err)
			}
			go loop.Serve(nln)
			defer loop.Shutdown(context.Background())
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			client.Write([]byte("0123456789"))
			time.Sleep(20 * time.Millisecond) // the handler is waiting by now
			client.Write([]byte("abcdefghij"))
			select {
			case s := <-got:
				if s != "0123456789abcdefghij" {
					t.Fatalf("handler got %q", s)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the waiting read was not woken")
			}
		})
	}
}
