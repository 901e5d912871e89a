package main

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/gobwas/ws"
)

// In-place WebSocket frame parsing for the lean receive path: the reader
// fills one large buffer per wakeup and walks the frames in it without
// copying or allocating; a frame cut by the end of the buffer is left for
// the next read.

// Errors of the in-place frame parser.
var (
	errFrameRSV     = errors.New("loadgen: frame with reserved bits or opcode")
	errFrameControl = errors.New("loadgen: control frame too long or fragmented")
)

// frameHdr is a parsed frame header.
type frameHdr struct {
	Fin    bool
	Op     byte // opcode (0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong)
	Masked bool
	Mask   [4]byte
	HLen   int   // header bytes, mask included
	Len    int64 // payload bytes
}

// parseFrameHeader parses the frame header at the start of b. It returns
// ok false when b holds only part of the header (read more), and an error
// for a frame no server may send (reserved bits or opcodes, a control
// frame over 125 bytes or fragmented, a length over max).
func parseFrameHeader(b []byte, max int64) (h frameHdr, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	b0, b1 := b[0], b[1]
	if b0&0x70 != 0 {
		return h, false, errFrameRSV
	}
	h.Fin = b0&0x80 != 0
	h.Op = b0 & 0x0f
	switch h.Op {
	case 0, 1, 2, 8, 9, 10:
	default:
		return h, false, errFrameRSV
	}
	h.Masked = b1&0x80 != 0
	n := int64(b1 & 0x7f)
	h.HLen = 2
	switch n {
	case 126:
		if len(b) < 4 {
			return h, false, nil
		}
		n = int64(binary.BigEndian.Uint16(b[2:]))
		h.HLen = 4
	case 127:
		if len(b) < 10 {
			return h, false, nil
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u > 1<<62 {
			return h, false, errFrameTooBig
		}
		n = int64(u)
		h.HLen = 10
	}
	if h.Op >= 8 && (n > 125 || !h.Fin) {
		return h, false, errFrameControl
	}
	if n > max {
		return h, false, errFrameTooBig
	}
	if h.Masked {
		if len(b) < h.HLen+4 {
			return h, false, nil
		}
		copy(h.Mask[:], b[h.HLen:h.HLen+4])
		h.HLen += 4
	}
	h.Len = n
	return h, true, nil
}

// frameSink receives one complete frame; payload points into the buffer
// (unmasked in place) and is valid only during the call. Returning an
// error stops the walk.
type frameSink interface {
	onFrame(h frameHdr, payload []byte) error
}

// frameFunc adapts a function to frameSink.
type frameFunc func(h frameHdr, payload []byte) error

func (f frameFunc) onFrame(h frameHdr, p []byte) error { return f(h, p) }

// walkFrames calls fn for every complete frame in b and returns the bytes
// consumed (the start of an incomplete frame, or len(b)) and need, the
// total size of that incomplete frame when its header is complete (0 if
// not known yet), so a caller can grow its buffer for a frame larger than
// it.
func walkFrames(b []byte, max int64, fn frameSink) (used int, need int64, err error) {
	for used < len(b) {
		h, ok, err := parseFrameHeader(b[used:], max)
		if err != nil {
			return used, 0, err
		}
		if !ok {
			return used, 0, nil
		}
		total := int64(h.HLen) + h.Len
		if int64(len(b)-used) < total {
			return used, total, nil
		}
		p := b[used+h.HLen : used+int(total)]
		if h.Masked {
			maskBytes(p, h.Mask)
		}
		if err := fn.onFrame(h, p); err != nil {
			return used + int(total), 0, err
		}
		used += int(total)
	}
	return used, 0, nil
}

// maskBytes XORs p with the mask (RFC 6455 5.3), from offset 0.
func maskBytes(p []byte, m [4]byte) { ws.Cipher(p, m, 0) }

// appendMaskedFrame appends a complete, masked client frame.
func appendMaskedFrame(dst []byte, op byte, p []byte, mask uint32) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(p); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], mask)
	dst = append(dst, m[:]...)
	start := len(dst)
	dst = append(dst, p...)
	maskBytes(dst[start:], m)
	return dst
}

// parseHTTP101 looks for a complete HTTP response head at the start of b.
// It returns the head's length (0: incomplete), and an error if the head
// is not "101" with the expected Sec-WebSocket-Accept value.
func parseHTTP101(b []byte, accept []byte) (int, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > 16<<10 {
			return 0, errUpgradeHead
		}
		return 0, nil
	}
	head := b[:end+4]
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		sp := bytes.IndexByte(head, ' ')
		code := head
		if sp >= 0 && len(head) >= sp+4 {
			code = head[sp+1 : sp+4]
		}
		return end + 4, &upgradeStatusError{code: string(code[:min(len(code), 3)])}
	}
	if len(accept) > 0 && !bytes.Contains(head, accept) {
		return end + 4, errUpgradeAccept
	}
	return end + 4, nil
}

// Upgrade response errors.
var (
	errUpgradeHead   = errors.New("loadgen: upgrade response head too long")
	errUpgradeAccept = errors.New("loadgen: bad Sec-WebSocket-Accept")
)

// upgradeStatusError is a non-101 upgrade response.
type upgradeStatusError struct{ code string }

func (e *upgradeStatusError) Error() string { return "loadgen: upgrade answered HTTP " + e.code }
