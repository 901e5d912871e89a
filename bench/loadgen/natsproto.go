package main

import (
	"bytes"
	"errors"
)

// natsKind is the kind of a protocol message a NATS server sends.
type natsKind uint8

// NATS server-to-client protocol messages.
const (
	natsMsg natsKind = iota + 1
	natsPing
	natsPong
	natsInfo
	natsOK
	natsErr
)

// Errors of the NATS stream parser.
var (
	errNATSLine    = errors.New("natsproto: control line too long")
	errNATSProto   = errors.New("natsproto: unknown protocol message")
	errNATSMsgArgs = errors.New("natsproto: malformed MSG arguments")
	errNATSPayload = errors.New("natsproto: payload not followed by CRLF")
)

// natsMaxLine bounds a control line (NATS's own default is 4 KiB).
const natsMaxLine = 4096

// natsMaxPayload bounds one message payload accepted by the parser.
const natsMaxPayload = 8 << 20

// natsParser parses the server side of the NATS text protocol from a byte
// stream whose chunks (WebSocket frames) may hold several protocol messages
// or split one anywhere. Its zero value is ready to use.
type natsParser struct {
	buf []byte // unparsed tail of earlier chunks
}

// natsHandler receives one parsed message. For natsMsg, subject, sid and
// payload are set (payload excludes HMSG headers); for natsInfo and
// natsErr, payload holds the argument text. Slices are valid only during
// the call.
type natsHandler func(kind natsKind, subject, sid, payload []byte)

// Feed parses b (after what earlier calls left over) and calls fn for each
// complete protocol message. A protocol violation returns an error and the
// parser must not be used again.
func (p *natsParser) Feed(b []byte, fn natsHandler) error {
	data := b
	if len(p.buf) > 0 {
		p.buf = append(p.buf, b...)
		data = p.buf
	}
	n, err := parseNATS(data, fn)
	if err != nil {
		return err
	}
	rest := data[n:]
	if len(p.buf) > 0 {
		m := copy(p.buf, rest)
		p.buf = p.buf[:m]
	} else if len(rest) > 0 {
		p.buf = append(p.buf[:0], rest...)
	}
	if len(p.buf) == 0 && cap(p.buf) > 64<<10 {
		p.buf = nil // do not keep a large buffer on an idle connection
	}
	return nil
}

// parseNATS parses complete messages from data and returns how many bytes
// it consumed.
func parseNATS(data []byte, fn natsHandler) (int, error) {
	off := 0
	for off < len(data) {
		rest := data[off:]
		eol := bytes.IndexByte(rest, '\n')
		if eol < 0 {
			if len(rest) > natsMaxLine {
				return off, errNATSLine
			}
			return off, nil
		}
		if eol > natsMaxLine {
			return off, errNATSLine
		}
		line := rest[:eol]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		op, args := line, []byte(nil)
		if i := bytes.IndexAny(line, " \t"); i >= 0 {
			op, args = line[:i], bytes.TrimLeft(line[i+1:], " \t")
		}
		next := eol + 1
		switch {
		case asciiEq(op, "MSG"), asciiEq(op, "HMSG"):
			subj, sid, hdr, total, ok := parseMsgArgs(args, len(op) == 4)
			if !ok {
				return off, errNATSMsgArgs
			}
			if len(rest) < next+total+2 {
				return off, nil // wait for the rest of the payload
			}
			pl := rest[next : next+total]
			if rest[next+total] != '\r' || rest[next+total+1] != '\n' {
				return off, errNATSPayload
			}
			fn(natsMsg, subj, sid, pl[hdr:])
			next += total + 2
		case asciiEq(op, "PING"):
			fn(natsPing, nil, nil, nil)
		case asciiEq(op, "PONG"):
			fn(natsPong, nil, nil, nil)
		case asciiEq(op, "INFO"):
			fn(natsInfo, nil, nil, args)
		case asciiEq(op, "+OK"):
			fn(natsOK, nil, nil, nil)
		case asciiEq(op, "-ERR"):
			fn(natsErr, nil, nil, args)
		case len(op) == 0:
			// Blank line: tolerate.
		default:
			return off, errNATSProto
		}
		off += next
	}
	return off, nil
}

// parseMsgArgs splits "subject sid [reply] n" (or, for HMSG,
// "subject sid [reply] hdr total") and returns the header length (0 for
// MSG) and the total payload length.
func parseMsgArgs(args []byte, hmsg bool) (subj, sid []byte, hdr, total int, ok bool) {
	var f [5][]byte
	n := 0
	for len(args) > 0 {
		i := bytes.IndexAny(args, " \t")
		var tok []byte
		if i < 0 {
			tok, args = args, nil
		} else {
			tok, args = args[:i], bytes.TrimLeft(args[i+1:], " \t")
		}
		if len(tok) == 0 {
			continue
		}
		if n == len(f) {
			return nil, nil, 0, 0, false
		}
		f[n] = tok
		n++
	}
	want := 3
	if hmsg {
		want = 4
	}
	if n != want && n != want+1 {
		return nil, nil, 0, 0, false
	}
	total, ok = atoiPos(f[n-1])
	if !ok || total > natsMaxPayload {
		return nil, nil, 0, 0, false
	}
	if hmsg {
		hdr, ok = atoiPos(f[n-2])
		if !ok || hdr > total {
			return nil, nil, 0, 0, false
		}
	}
	return f[0], f[1], hdr, total, true
}

// atoiPos parses a non-negative decimal of at most 9 digits.
func atoiPos(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// asciiEq compares b with an upper-case ASCII word, ignoring case.
func asciiEq(b []byte, word string) bool {
	if len(b) != len(word) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != word[i] {
			return false
		}
	}
	return true
}
