package gateway

import (
	"encoding/binary"
	"errors"

	"github.com/gobwas/ws"
)

// WebSocket protocol violations found while parsing a client frame header.
var (
	errNeedMore        = errors.New("gateway: need more bytes")
	errUnmasked        = errors.New("gateway: client frame not masked")
	errReservedBits    = errors.New("gateway: reserved bits set")
	errBadOpCode       = errors.New("gateway: unknown opcode")
	errControlTooLarge = errors.New("gateway: control frame payload over 125 bytes")
	errControlFragment = errors.New("gateway: fragmented control frame")
	errBadLength       = errors.New("gateway: invalid payload length")
)

// parseClientHeader parses a client frame header at the start of b. It
// returns the header and its length, errNeedMore when b is too short, or a
// protocol error. It does not allocate.
func parseClientHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, errNeedMore
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	l := int64(b[1] & 0x7f)
	n = 2
	switch l {
	case 126:
		if len(b) < 4 {
			return h, 0, errNeedMore
		}
		l = int64(binary.BigEndian.Uint16(b[2:4]))
		if l < 126 {
			return h, 0, errBadLength
		}
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, errNeedMore
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 || u < 1<<16 {
			return h, 0, errBadLength
		}
		l = int64(u)
		n = 10
	}
	h.Length = l
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, errNeedMore
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	switch {
	case h.Rsv != 0:
		return h, n, errReservedBits
	case !h.Masked:
		return h, n, errUnmasked
	}
	switch h.OpCode {
	case ws.OpContinuation, ws.OpText, ws.OpBinary:
	case ws.OpClose, ws.OpPing, ws.OpPong:
		if h.Length > 125 {
			return h, n, errControlTooLarge
		}
		if !h.Fin {
			return h, n, errControlFragment
		}
	default:
		return h, n, errBadOpCode
	}
	return h, n, nil
}

// maxServerHeader is the longest unmasked server frame header.
const maxServerHeader = 10

// serverHeaderLen returns the header length of an unmasked server frame
// with a payload of n bytes.
func serverHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n < 1<<16:
		return 4
	}
	return 10
}

// putServerHeader writes a final, unmasked frame header for a payload of n
// bytes so that it ends exactly at b[end]; it returns the header's start.
func putServerHeader(b []byte, end int, op ws.OpCode, n int) int {
	hl := serverHeaderLen(n)
	s := end - hl
	b[s] = 0x80 | byte(op)
	switch hl {
	case 2:
		b[s+1] = byte(n)
	case 4:
		b[s+1] = 126
		binary.BigEndian.PutUint16(b[s+2:], uint16(n))
	default:
		b[s+1] = 127
		binary.BigEndian.PutUint64(b[s+2:], uint64(n))
	}
	return s
}

// validCloseCode reports whether a client may send code in a close frame
// (RFC 6455 section 7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
