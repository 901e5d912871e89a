package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Errors of the WebSocket client.
var (
	errClosed      = errors.New("loadgen: connection closed by server")
	errFrameTooBig = errors.New("loadgen: server frame too large")
)

// maxServerFrame bounds a frame the load generator accepts from a server.
const maxServerFrame = 32 << 20

// wsConn is a lean client WebSocket: a net.Conn, a small read buffer and a
// reusable payload buffer. One goroutine reads (readMessage); writes are
// serialized by wmu, so a publisher and the reader's pong can share it.
type wsConn struct {
	c       net.Conn
	br      *bufio.Reader
	payload []byte // reused by readMessage

	wmu  sync.Mutex
	wbuf []byte
	mask uint32

	// CloseCode is the status of the close frame the server sent, if any.
	CloseCode   ws.StatusCode
	CloseReason string
}

// dialOpts configures dialWS.
type dialOpts struct {
	URL       string
	Protocols []string
	LocalIP   net.IP // source address; nil lets the kernel choose
	Timeout   time.Duration
	ReadBuf   int // bytes; default 1024
}

// dialWS opens a TCP connection from opts.LocalIP and runs the WebSocket
// upgrade. It returns the connection and the time the upgrade took.
func dialWS(ctx context.Context, o dialOpts) (*wsConn, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ReadBuf <= 0 {
		o.ReadBuf = 1024
	}
	nd := net.Dialer{Timeout: o.Timeout}
	if o.LocalIP != nil {
		nd.LocalAddr = &net.TCPAddr{IP: o.LocalIP}
	}
	d := ws.Dialer{
		Protocols: o.Protocols,
		Timeout:   o.Timeout,
		NetDial:   nd.DialContext,
	}
	c, br, _, err := d.Dial(ctx, o.URL)
	if err != nil {
		return nil, err
	}
	w := &wsConn{c: c, mask: rand.Uint32() | 1}
	if br != nil && br.Buffered() > 0 {
		// The server's first frames arrived with the 101 response: keep them.
		pending, _ := br.Peek(br.Buffered())
		pending = append([]byte(nil), pending...)
		ws.PutReader(br)
		w.br = bufio.NewReaderSize(io.MultiReader(&byteReader{b: pending}, c), o.ReadBuf)
	} else {
		if br != nil {
			ws.PutReader(br)
		}
		w.br = bufio.NewReaderSize(c, o.ReadBuf)
	}
	return w, nil
}

// byteReader is a minimal bytes.Reader.
type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// readMessage returns the next data message (fragments joined). Pings are
// answered, pongs skipped; a close frame returns errClosed with CloseCode
// set. The payload is valid until the next call.
func (w *wsConn) readMessage() (ws.OpCode, []byte, error) {
	var op ws.OpCode
	w.payload = w.payload[:0]
	for {
		h, err := ws.ReadHeader(w.br)
		if err != nil {
			return 0, nil, err
		}
		if h.Length > maxServerFrame || int64(len(w.payload))+h.Length > maxServerFrame {
			return 0, nil, errFrameTooBig
		}
		if h.OpCode.IsControl() {
			var cb [125]byte
			p := cb[:h.Length]
			if _, err := io.ReadFull(w.br, p); err != nil {
				return 0, nil, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := w.writeFrame(ws.OpPong, p); err != nil {
					return 0, nil, err
				}
			case ws.OpClose:
				w.CloseCode, w.CloseReason = ws.ParseCloseFrameData(p)
				_ = w.writeFrame(ws.OpClose, p[:min(len(p), 2)])
				return 0, nil, errClosed
			}
			continue
		}
		n := len(w.payload)
		need := n + int(h.Length)
		if cap(w.payload) < need {
			np := make([]byte, n, need)
			copy(np, w.payload)
			w.payload = np
		}
		w.payload = w.payload[:need]
		if _, err := io.ReadFull(w.br, w.payload[n:]); err != nil {
			return 0, nil, err
		}
		if h.Masked {
			ws.Cipher(w.payload[n:], h.Mask, 0)
		}
		if h.OpCode != ws.OpContinuation {
			op = h.OpCode
		}
		if h.Fin {
			return op, w.payload, nil
		}
	}
}

// writeFrame sends one masked frame.
func (w *wsConn) writeFrame(op ws.OpCode, p []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	b := w.wbuf[:0]
	b = append(b, 0x80|byte(op))
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	w.mask = w.mask*1664525 + 1013904223
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], w.mask)
	b = append(b, m[:]...)
	start := len(b)
	b = append(b, p...)
	ws.Cipher(b[start:], m, 0)
	_, err := w.c.Write(b)
	if cap(b) <= 4096 {
		w.wbuf = b
	}
	return err
}

// Close closes the TCP connection without a closing handshake. With
// abort, SO_LINGER 0 makes it a reset, which leaves no TIME_WAIT socket
// behind (for churn).
func (w *wsConn) Close(abort bool) error {
	if abort {
		if tc, ok := w.c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	return w.c.Close()
}

// CloseGracefully sends a close frame (1000) then closes.
func (w *wsConn) CloseGracefully() error {
	_ = w.c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = w.writeFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	return w.c.Close()
}

// describeClose names how a read loop ended, for error counts.
func describeClose(w *wsConn, err error) string {
	switch {
	case errors.Is(err, errClosed):
		return fmt.Sprintf("close_%d", w.CloseCode)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, net.ErrClosed):
		return "local_close"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return classify(err)
}
