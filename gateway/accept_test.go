package gateway

import (
	"net"
	"testing"

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
