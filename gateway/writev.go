package gateway

import (
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/arqonbus/arqonbus/pool"
)

// Direct writes. The writer hands frames to the kernel itself, with one
// writev per round straight from the shared pooled frames: no copy into
// netpoll's output LinkBuffer, and no output node left behind on an idle
// connection (netpoll keeps the last node of its output buffer, at least
// LinkBufferCap bytes, for the life of the connection).
//
// Close safety: the socket's file descriptor must not be written after
// netpoll closes it (the number could already name another connection).
// netpoll runs close callbacks newest first, and it closes the fd in a
// callback registered when the connection was created, so our onClose
// (registered later, in onPrepare) runs before the fd is closed. onClose
// takes fdMu and sets fdGone; a writev runs under fdMu and only while
// fdGone is false. So no write can reach a closed or reused descriptor.
//
// When the socket buffer is full (EAGAIN, or a short write), the rest of
// the round goes through netpoll's Connection.Write, which waits for the
// socket to drain through the poller and honours the write timeout; the
// next round tries the direct path again.

// maxIovecs bounds the frames handed to one writev (IOV_MAX is 1024).
const maxIovecs = 256

// errFdGone is returned by a direct write after the connection closed.
var errFdGone = errors.New("gateway: connection closed")

// iovecs is a writer's scratch space for one writev.
type iovecs [maxIovecs]unix.Iovec

// writev writes iov[:n] to the socket without blocking. It returns how
// many bytes the kernel took: less than asked when the socket is full.
func (c *conn) writev(iov *iovecs, n int) (int, error) {
	c.g.metrics.writes.Inc()
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.fdGone || c.fd < 0 {
		return 0, errFdGone
	}
	for {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(c.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		switch e {
		case 0:
			return int(r), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		default:
			return 0, e
		}
	}
}

// writeRest sends what a short writev left of frames, skipping the first
// done bytes, through netpoll (which waits for the socket to drain).
func (c *conn) writeRest(frames []*pool.Buf, done int) error {
	c.g.metrics.writeStalls.Inc()
	for _, b := range frames {
		if done >= len(b.B) {
			done -= len(b.B)
			continue
		}
		if _, err := c.nc.Write(b.B[done:]); err != nil {
			return err
		}
		done = 0
	}
	return nil
}

// fdOf returns the socket's file descriptor, or -1.
func fdOf(nc any) int {
	if f, ok := nc.(interface{ Fd() int }); ok {
		return f.Fd()
	}
	return -1
}

// forgetFd stops direct writes; it runs in onClose, before netpoll closes
// the descriptor, and waits for a write in progress.
func (c *conn) forgetFd() {
	c.fdMu.Lock()
	c.fdGone = true
	c.fdMu.Unlock()
}
