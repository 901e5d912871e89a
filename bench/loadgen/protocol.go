package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/pb"
)

// Target kinds: the server the load generator speaks to.
const (
	kindArqon = "arqon" // ArqonBus gateway, JSON or Protobuf codec
	kindNATS  = "nats"  // nats-server WebSocket listener, NATS text protocol
	kindBare  = "bare"  // bench/loadgen/bareserver, a minimal text protocol
)

// errServer is an ERROR frame (or -ERR) from the server.
var errServer = errors.New("loadgen: server error")

// target says where and how to connect.
type target struct {
	Kind        string
	Proto       bool     // ArqonBus: Protobuf codec instead of JSON
	URLs        []string // WebSocket URLs (token already in the query for ArqonBus)
	PIDs        []int    // server processes, for RSS and CPU
	MetricsURLs []string // Prometheus endpoints (ArqonBus), if any
	SrcIPs      []net.IP // client source addresses, used round-robin
	Timeout     time.Duration
}

// client is one load-generator connection speaking the target's protocol.
// Connect and Subscribe read synchronously; afterwards one goroutine runs
// readLoop while others may Publish.
type client struct {
	ws     *wsConn
	t      *target
	np     natsParser
	nextID uint64
	pub    []byte          // publish frame scratch (publisher goroutine only)
	batch  []byte          // PublishBatch's write buffer (publisher goroutine only)
	seq    uint64          // next sequence number PublishBatch writes
	frame  *pb.ServerFrame // Protobuf decoding scratch (reader only)
}

// handshakeTimes are the phases of one connection, from the start of the
// TCP connect.
type handshakeTimes struct {
	Upgrade time.Duration // 101 received
	Welcome time.Duration // WELCOME (NATS: PONG after CONNECT) received
}

// connect dials connection number i and waits for the server's greeting.
func (t *target) connect(ctx context.Context, i int) (*client, handshakeTimes, error) {
	var ht handshakeTimes
	start := time.Now()
	o := dialOpts{URL: t.URLs[i%len(t.URLs)], Timeout: t.Timeout}
	if len(t.SrcIPs) > 0 {
		o.LocalIP = t.SrcIPs[i%len(t.SrcIPs)]
	}
	switch {
	case t.Kind == kindArqon && t.Proto:
		o.Protocols = []string{"arqon.v1.proto"}
	case t.Kind == kindArqon:
		o.Protocols = []string{"arqon.v1.json"}
	}
	w, err := dialWS(ctx, o)
	if err != nil {
		return nil, ht, err
	}
	ht.Upgrade = time.Since(start)
	c := &client{ws: w, t: t}
	_ = w.c.SetReadDeadline(time.Now().Add(t.Timeout))
	defer w.c.SetReadDeadline(time.Time{})
	switch t.Kind {
	case kindArqon:
		_, p, err := w.readMessage()
		if err != nil {
			w.Close(true)
			return nil, ht, err
		}
		if !c.isOp(p, pb.Op_OP_WELCOME) {
			w.Close(true)
			return nil, ht, fmt.Errorf("%w: expected WELCOME, got %.80q", errServer, p)
		}
	case kindNATS:
		if err := c.natsWait(natsInfo); err != nil {
			w.Close(true)
			return nil, ht, err
		}
		err := w.writeFrame(ws.OpBinary, []byte("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":false,\"no_responders\":false}\r\nPING\r\n"))
		if err == nil {
			err = c.natsWait(natsPong)
		}
		if err != nil {
			w.Close(true)
			return nil, ht, err
		}
	case kindBare:
		_, p, err := w.readMessage()
		if err != nil || string(p) != "W" {
			w.Close(true)
			return nil, ht, fmt.Errorf("%w: bad greeting %q %v", errServer, p, err)
		}
	}
	ht.Welcome = time.Since(start)
	return c, ht, nil
}

// isOp reports whether server frame p has op.
func (c *client) isOp(p []byte, op pb.Op) bool {
	if c.t.Proto {
		var f pb.ServerFrame
		return f.UnmarshalVT(p) == nil && f.Op == op
	}
	return bytes.HasPrefix(p, []byte(`{"op":"`+pb.OpName(op)+`"`))
}

// natsWait reads until a message of kind arrives (answering PINGs).
func (c *client) natsWait(kind natsKind) error {
	for {
		_, p, err := c.ws.readMessage()
		if err != nil {
			return err
		}
		got, ferr := false, error(nil)
		err = c.np.Feed(p, func(k natsKind, _, _, pl []byte) {
			switch k {
			case kind:
				got = true
			case natsPing:
				_ = c.ws.writeFrame(ws.OpBinary, []byte("PONG\r\n"))
			case natsErr:
				ferr = fmt.Errorf("%w: -ERR %s", errServer, pl)
			}
		})
		if err != nil {
			return err
		}
		if ferr != nil {
			return ferr
		}
		if got {
			return nil
		}
	}
}

// Subscribe subscribes to subject and waits for the server to confirm
// (ACK; NATS: the PONG after SUB+PING; bare: "A").
func (c *client) Subscribe(subject string) error {
	_ = c.ws.c.SetReadDeadline(time.Now().Add(c.t.Timeout))
	defer c.ws.c.SetReadDeadline(time.Time{})
	c.nextID++
	id := c.nextID
	switch c.t.Kind {
	case kindNATS:
		if err := c.ws.writeFrame(ws.OpBinary, []byte("SUB "+subject+" "+strconv.FormatUint(id, 10)+"\r\nPING\r\n")); err != nil {
			return err
		}
		return c.natsWait(natsPong)
	case kindBare:
		if err := c.ws.writeFrame(ws.OpText, []byte("S "+subject)); err != nil {
			return err
		}
		_, p, err := c.ws.readMessage()
		if err != nil {
			return err
		}
		if string(p) != "A" {
			return fmt.Errorf("%w: %q", errServer, p)
		}
		return nil
	}
	f := pb.ClientFrame{Op: pb.Op_OP_SUB, Id: id, Subject: subject}
	var err error
	if c.t.Proto {
		b, _ := f.MarshalVT()
		err = c.ws.writeFrame(ws.OpBinary, b)
	} else {
		err = c.ws.writeFrame(ws.OpText, pb.AppendClientJSON(nil, &f))
	}
	if err != nil {
		return err
	}
	for {
		_, p, err := c.ws.readMessage()
		if err != nil {
			return err
		}
		if c.t.Proto {
			var sf pb.ServerFrame
			if err := sf.UnmarshalVT(p); err != nil {
				return err
			}
			switch {
			case sf.Op == pb.Op_OP_ACK && sf.Id == id:
				return nil
			case sf.Op == pb.Op_OP_ERROR:
				return fmt.Errorf("%w: %v", errServer, sf.Error)
			}
			continue
		}
		switch {
		case bytes.HasPrefix(p, []byte(`{"op":"ack","id":`+strconv.FormatUint(id, 10)+`}`)):
			return nil
		case bytes.HasPrefix(p, []byte(`{"op":"error"`)):
			return fmt.Errorf("%w: %s", errServer, p)
		}
	}
}

// Publish sends payload on subject (no ack requested). One goroutine per
// client may publish.
func (c *client) Publish(subject string, payload []byte) error {
	b, op, err := c.appendPub(c.pub[:0], subject, payload)
	if err != nil {
		return err
	}
	c.pub = b
	return c.ws.writeFrame(op, b)
}

// PublishBatch sends k messages on subject in one write: each is payload
// with its timestamp (now) and the client's next sequence number filled
// in. It returns how many were written completely (all, unless the write
// failed).
func (c *client) PublishBatch(subject string, payload []byte, k int) (int, error) {
	now := time.Now().UnixNano()
	buf := c.batch[:0]
	var err error
	for range k {
		fillPayload(payload, now)
		fillSeq(payload, c.seq)
		c.seq++
		var op ws.OpCode
		start := len(c.pub)
		c.pub, op, err = c.appendPub(c.pub[:start], subject, payload)
		if err != nil {
			return 0, err
		}
		c.ws.mask = c.ws.mask*1664525 + 1013904223
		buf = appendMaskedFrame(buf, byte(op), c.pub[start:], c.ws.mask)
		c.pub = c.pub[:start]
	}
	c.batch = buf
	c.ws.wmu.Lock()
	n, werr := c.ws.c.Write(buf)
	c.ws.wmu.Unlock()
	if werr != nil {
		// Only whole frames count as sent (every frame of a batch has the
		// same length); a torn frame ends the connection anyway.
		done := min(k, n/(len(buf)/k))
		c.seq -= uint64(k - done)
		return done, werr
	}
	return k, nil
}

// appendPub appends the target's encoding of a publish of payload on
// subject and returns the WebSocket opcode to send it with.
func (c *client) appendPub(b []byte, subject string, payload []byte) ([]byte, ws.OpCode, error) {
	op := ws.OpText
	switch c.t.Kind {
	case kindNATS:
		op = ws.OpBinary
		b = append(b, "PUB "...)
		b = append(b, subject...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(len(payload)), 10)
		b = append(b, "\r\n"...)
		b = append(b, payload...)
		b = append(b, "\r\n"...)
	case kindBare:
		b = append(b, "P "...)
		b = append(b, subject...)
		b = append(b, ' ')
		b = append(b, payload...)
	default:
		if c.t.Proto {
			op = ws.OpBinary
			f := pb.ClientFrame{Op: pb.Op_OP_PUB, Subject: subject, Data: payload, Text: true}
			n := f.SizeVT()
			start := len(b)
			b = append(b, make([]byte, n)...)
			if _, err := f.MarshalToSizedBufferVT(b[start:]); err != nil {
				return b[:start], op, err
			}
		} else {
			// The payload is ASCII without quotes or backslashes: no escaping.
			b = append(b, `{"op":"pub","subject":"`...)
			b = append(b, subject...)
			b = append(b, `","data":"`...)
			b = append(b, payload...)
			b = append(b, `"}`...)
		}
	}
	return b, op, nil
}

// msgHandler receives a delivered message's payload (valid during the
// call) and the time it was read.
type msgHandler func(payload []byte)

// readLoop reads until the connection ends, passing each delivered
// message's payload to onMsg and each server error message to onErr. It
// returns why it stopped.
func (c *client) readLoop(onMsg msgHandler, onErr func(string)) error {
	for {
		_, p, err := c.ws.readMessage()
		if err != nil {
			return err
		}
		switch c.t.Kind {
		case kindNATS:
			err = c.np.Feed(p, func(k natsKind, _, _, pl []byte) {
				switch k {
				case natsMsg:
					onMsg(pl)
				case natsPing:
					_ = c.ws.writeFrame(ws.OpBinary, []byte("PONG\r\n"))
				case natsErr:
					if onErr != nil {
						onErr(string(pl))
					}
				}
			})
			if err != nil {
				return err
			}
		case kindBare:
			if len(p) > 2 && p[0] == 'M' {
				onMsg(p[2:])
			}
		default:
			if c.t.Proto {
				if c.frame == nil {
					c.frame = new(pb.ServerFrame)
				}
				f := c.frame
				f.Reset()
				if err := f.UnmarshalVTUnsafe(p); err != nil {
					return err
				}
				switch f.Op {
				case pb.Op_OP_MSG:
					onMsg(f.Data)
				case pb.Op_OP_ERROR:
					if onErr != nil && f.Error != nil {
						onErr(pb.CodeName(f.Error.Code))
					}
				}
				continue
			}
			if d, ok := jsonMsgData(p); ok {
				onMsg(d)
			} else if code, ok := jsonErrorCode(p); ok && onErr != nil {
				onErr(code)
			}
		}
	}
}

// jsonMsgData returns the "data" string of a JSON MSG frame as the gateway
// writes it (op first). The load generator's payloads need no unescaping.
func jsonMsgData(p []byte) ([]byte, bool) {
	if !bytes.HasPrefix(p, []byte(`{"op":"msg"`)) {
		return nil, false
	}
	i := bytes.Index(p, []byte(`"data":"`))
	if i < 0 {
		return nil, false
	}
	d := p[i+8:]
	j := bytes.IndexByte(d, '"')
	if j < 0 {
		return nil, false
	}
	return d[:j], true
}

// jsonErrorCode returns the code of a JSON ERROR frame ("error" if it has
// none).
func jsonErrorCode(p []byte) (string, bool) {
	if !bytes.HasPrefix(p, []byte(`{"op":"error"`)) {
		return "", false
	}
	if i := bytes.Index(p, []byte(`"code":"`)); i >= 0 {
		d := p[i+8:]
		if j := bytes.IndexByte(d, '"'); j >= 0 {
			return string(d[:j]), true
		}
	}
	return "error", true
}

// Payloads carry the publisher's wall clock and a sequence number: 19
// decimal digits of Unix nanoseconds, '.', 10 decimal digits of the
// publisher's message number (from 0), then 'x' padding up to the payload
// size. Subscribers check the numbers for losses, duplicates and order.
const (
	tsDigits   = 19
	seqDigits  = 10
	seqOffset  = tsDigits + 1
	minPayload = seqOffset + seqDigits
)

// fillPayload writes now into the first 19 bytes of p (len(p) >= 19).
func fillPayload(p []byte, now int64) {
	for i := tsDigits - 1; i >= 0; i-- {
		p[i] = byte('0' + now%10)
		now /= 10
	}
}

// fillSeq writes seq into p[20:30] (modulo 10^10).
func fillSeq(p []byte, seq uint64) {
	for i := seqOffset + seqDigits - 1; i >= seqOffset; i-- {
		p[i] = byte('0' + seq%10)
		seq /= 10
	}
}

// newPayload returns a payload buffer of size bytes (at least minPayload),
// sequence number 0.
func newPayload(size int) []byte {
	p := bytes.Repeat([]byte("x"), max(size, minPayload))
	p[tsDigits] = '.'
	fillSeq(p, 0)
	return p
}

// payloadTime parses the timestamp at the start of a payload.
func payloadTime(p []byte) (int64, bool) {
	if len(p) < tsDigits {
		return 0, false
	}
	var n int64
	for _, c := range p[:tsDigits] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// payloadSeq parses the sequence number of a payload.
func payloadSeq(p []byte) (uint64, bool) {
	if len(p) < minPayload || p[tsDigits] != '.' {
		return 0, false
	}
	var n uint64
	for _, c := range p[seqOffset:minPayload] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
