package pb

import (
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fastjson"
)

// Errors returned by the JSON decoders. Each wraps into a message the
// gateway sends back in a VALIDATION_ERROR (or UNKNOWN_OP) frame.
var (
	ErrJSONSyntax    = errors.New("pb: malformed JSON")
	ErrJSONNotObject = errors.New("pb: frame is not a JSON object")
	ErrJSONField     = errors.New("pb: field has the wrong type")
	ErrUnknownOp     = errors.New("pb: unknown op")
	ErrBadBase64     = errors.New("pb: data_b64 is not valid base64")
	ErrDataConflict  = errors.New("pb: frame has both data and data_b64")
)

// FieldError names the JSON field that failed to decode.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Err.Error() + ": " + e.Field }
func (e *FieldError) Unwrap() error { return e.Err }

var opNames = map[Op]string{
	Op_OP_SUB: "sub", Op_OP_UNSUB: "unsub", Op_OP_PUB: "pub", Op_OP_PING: "ping", Op_OP_PRESENCE: "presence",
	Op_OP_WELCOME: "welcome", Op_OP_MSG: "msg", Op_OP_ACK: "ack", Op_OP_ERROR: "error", Op_OP_PONG: "pong",
	Op_OP_PRESENCE_UPDATE: "presence_update", Op_OP_PRESENCE_LEAVE: "presence_leave",
}

// OpName returns the JSON name of op ("sub", "msg", ...), or "" if it has none.
func OpName(op Op) string { return opNames[op] }

// ParseOp returns the Op with JSON name s, or OP_UNSPECIFIED.
func ParseOp(s []byte) Op {
	switch string(s) {
	case "sub":
		return Op_OP_SUB
	case "unsub":
		return Op_OP_UNSUB
	case "pub":
		return Op_OP_PUB
	case "ping":
		return Op_OP_PING
	case "presence":
		return Op_OP_PRESENCE
	case "welcome":
		return Op_OP_WELCOME
	case "msg":
		return Op_OP_MSG
	case "ack":
		return Op_OP_ACK
	case "error":
		return Op_OP_ERROR
	case "pong":
		return Op_OP_PONG
	case "presence_update":
		return Op_OP_PRESENCE_UPDATE
	case "presence_leave":
		return Op_OP_PRESENCE_LEAVE
	}
	return Op_OP_UNSPECIFIED
}

// CodeName returns the JSON name of an error code ("VALIDATION_ERROR").
func CodeName(c ErrorCode) string {
	s := c.String()
	const prefix = "ERROR_CODE_"
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

// ParseCode returns the ErrorCode with JSON name s.
func ParseCode(s string) ErrorCode {
	if v, ok := ErrorCode_value["ERROR_CODE_"+s]; ok {
		return ErrorCode(v)
	}
	return ErrorCode_ERROR_CODE_UNSPECIFIED
}

// b2s views b as a string without copying; the string is valid only while b
// is unchanged.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// DecodeClientJSON decodes a text frame into f, reusing f's storage. Strings
// and data in f point into p's buffer (or scratch for data_b64) and are valid
// until p parses again. Unknown fields are ignored. The caller resets f.
// scratch receives the decoded data_b64 bytes and the text of "info" (the
// JSON object exactly as the client wrote it) and is returned grown.
func DecodeClientJSON(p *fastjson.Parser, data []byte, f *ClientFrame, scratch []byte) ([]byte, error) {
	// fastjson's parser is lax about values it skips; validate strictly.
	if fastjson.ValidateBytes(data) != nil || hasControlInString(data) {
		return scratch, ErrJSONSyntax
	}
	v, err := p.ParseBytes(data)
	if err != nil {
		return scratch, ErrJSONSyntax
	}
	o, err := v.Object()
	if err != nil {
		return scratch, ErrJSONNotObject
	}
	if x := o.Get("id"); x != nil {
		id, err := x.Uint64()
		if err != nil {
			return scratch, &FieldError{"id", ErrJSONField}
		}
		f.Id = id
	}
	opv := o.Get("op")
	if opv == nil || opv.Type() != fastjson.TypeString {
		return scratch, &FieldError{"op", ErrJSONField}
	}
	opb, _ := opv.StringBytes()
	f.Op = ParseOp(opb)
	if f.Op == Op_OP_UNSPECIFIED || f.Op >= Op_OP_WELCOME {
		return scratch, &FieldError{string(opb), ErrUnknownOp}
	}
	if x := o.Get("subject"); x != nil {
		s, err := x.StringBytes()
		if err != nil {
			return scratch, &FieldError{"subject", ErrJSONField}
		}
		f.Subject = b2s(s)
	}
	if x := o.Get("ack"); x != nil {
		b, err := x.Bool()
		if err != nil {
			return scratch, &FieldError{"ack", ErrJSONField}
		}
		f.Ack = b
	}
	d, db := o.Get("data"), o.Get("data_b64")
	if d != nil && db != nil {
		return scratch, ErrDataConflict
	}
	if d != nil {
		s, err := d.StringBytes()
		if err != nil {
			return scratch, &FieldError{"data", ErrJSONField}
		}
		f.Data = s
		f.Text = true
	}
	if db != nil {
		s, err := db.StringBytes()
		if err != nil {
			return scratch, &FieldError{"data_b64", ErrJSONField}
		}
		n := base64.StdEncoding.DecodedLen(len(s))
		if cap(scratch) < n {
			scratch = make([]byte, n)
		}
		m, err := base64.StdEncoding.Decode(scratch[:n], s)
		if err != nil {
			return scratch, ErrBadBase64
		}
		f.Data = scratch[:m]
		f.Text = false
	}
	if x := o.Get("headers"); x != nil {
		ho, err := x.Object()
		if err != nil {
			return scratch, &FieldError{"headers", ErrJSONField}
		}
		var herr error
		ho.Visit(func(k []byte, hv *fastjson.Value) {
			if herr != nil {
				return
			}
			s, err := hv.StringBytes()
			if err != nil {
				herr = &FieldError{"headers." + string(k), ErrJSONField}
				return
			}
			f.Headers = appendHeader(f.Headers, b2s(k), b2s(s))
		})
		if herr != nil {
			return scratch, herr
		}
	}
	if x := o.Get("presence"); x != nil {
		b, err := x.Bool()
		if err != nil {
			return scratch, &FieldError{"presence", ErrJSONField}
		}
		f.Presence = b
	}
	if x := o.Get("count_only"); x != nil {
		b, err := x.Bool()
		if err != nil {
			return scratch, &FieldError{"count_only", ErrJSONField}
		}
		f.CountOnly = b
	}
	if x := o.Get("limit"); x != nil {
		n, err := x.Uint64()
		if err != nil || n > math.MaxUint32 {
			return scratch, &FieldError{"limit", ErrJSONField}
		}
		f.Limit = uint32(n)
	}
	if x := o.Get("cursor"); x != nil {
		s, err := x.StringBytes()
		if err != nil {
			return scratch, &FieldError{"cursor", ErrJSONField}
		}
		f.Cursor = b2s(s)
	}
	if x := o.Get("info"); x != nil {
		if x.Type() != fastjson.TypeObject {
			return scratch, &FieldError{"info", ErrJSONField}
		}
		// info is kept as the client wrote it. fastjson keeps no source
		// offsets, so find the member's text in data (validated above) and
		// copy it into scratch after any data_b64 bytes: data is the
		// caller's buffer and may not outlive this call.
		off := 0
		if db != nil {
			off = len(f.Data)
		}
		if raw := rawMember(data, "info"); raw != nil {
			n := off + len(raw)
			if cap(scratch) < n {
				// f.Data keeps the old array alive; only info moves.
				scratch = make([]byte, n)
			}
			scratch = scratch[:n]
			copy(scratch[off:], raw)
			f.Info = scratch[off:n:n]
		} else { // unreachable for valid JSON; fastjson's compact form
			scratch = x.MarshalTo(scratch[:off])
			f.Info = scratch[off:len(scratch):len(scratch)]
		}
	}
	return scratch, nil
}

// IsJSONObject reports whether b is exactly one JSON object (whitespace
// around it allowed) that strict parsers accept: valid UTF-8, no raw control
// character inside a string. The gateway checks presence info with it, since
// AppendServerJSON writes info as is.
func IsJSONObject(b []byte) bool {
	i := skipWS(b, 0)
	return i < len(b) && b[i] == '{' && utf8.Valid(b) && fastjson.ValidateBytes(b) == nil && !hasControlInString(b)
}

// rawMember returns the text of the value of the first member named key in
// the JSON object b, or nil. b must be valid JSON (it is not checked again).
// The first member wins, as in fastjson's Object.Get.
func rawMember(b []byte, key string) []byte {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return nil // '}': no such member
		}
		ks := i
		i = skipString(b, i)
		k := b[ks+1 : i-1]
		i = skipWS(b, i) + 1 // ':'
		i = skipWS(b, i)
		vs := i
		i = skipValue(b, i)
		if i > len(b) {
			return nil
		}
		if keyEquals(k, key) {
			return b[vs:i]
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ',' {
			return nil
		}
		i++
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string literal that starts at
// b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b) + 1
}

// skipValue returns the index after the JSON value that starts at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b) + 1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b) + 1
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// keyEquals compares a raw (possibly escaped) JSON key with an ASCII name
// without allocating.
func keyEquals(raw []byte, name string) bool {
	j := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' && i+1 < len(raw) {
			i++
			switch raw[i] {
			case 'u':
				if i+4 >= len(raw) {
					return false
				}
				r, err := strconv.ParseUint(b2s(raw[i+1:i+5]), 16, 16)
				if err != nil || r >= utf8.RuneSelf {
					return false
				}
				c = byte(r)
				i += 4
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			default: // '"', '\\', '/'
				c = raw[i]
			}
		}
		if j >= len(name) || name[j] != c {
			return false
		}
		j++
	}
	return j == len(name)
}

// hasControlInString reports a raw control character inside a JSON string,
// which RFC 8259 forbids and fastjson lets through.
func hasControlInString(b []byte) bool {
	in, esc := false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case !in:
			in = c == '"'
		case c == '\\':
			esc = true
		case c == '"':
			in = false
		case c < 0x20:
			return true
		}
	}
	return false
}

// appendHeader appends a header, reusing a *Header left in the slice's
// spare capacity by an earlier frame.
func appendHeader(hs []*Header, k, v string) []*Header {
	if len(hs) < cap(hs) {
		hs = hs[:len(hs)+1]
		h := hs[len(hs)-1]
		if h == nil {
			h = &Header{}
			hs[len(hs)-1] = h
		}
		h.Key, h.Value = k, v
		return hs
	}
	return append(hs, &Header{Key: k, Value: v})
}

// ResetClientFrame clears f for reuse, keeping the headers slice's storage.
func ResetClientFrame(f *ClientFrame) {
	hs := f.Headers[:0]
	f.Op, f.Id, f.Subject, f.Data, f.Ack, f.Text = 0, 0, "", nil, false, false
	f.Presence, f.Info, f.CountOnly, f.Limit, f.Cursor = false, nil, false, 0, ""
	f.Headers = hs
}

// AppendJSONString appends s as a JSON string literal.
func AppendJSONString(dst []byte, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendStr(dst []byte, s string) []byte {
	return AppendJSONString(dst, unsafe.Slice(unsafe.StringData(s), len(s)))
}

func appendKey(dst []byte, k string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, k...)
	return append(dst, '"', ':')
}

// AppendServerJSON appends the JSON form of a server frame.
func AppendServerJSON(dst []byte, f *ServerFrame) []byte {
	dst = append(dst, `{"op":"`...)
	dst = append(dst, OpName(f.Op)...)
	dst = append(dst, '"')
	if f.Id != 0 || f.Op == Op_OP_ACK || f.Op == Op_OP_PONG {
		dst = appendKey(dst, "id")
		dst = strconv.AppendUint(dst, f.Id, 10)
	}
	switch f.Op {
	case Op_OP_MSG:
		dst = appendKey(dst, "subject")
		dst = appendStr(dst, f.Subject)
		dst = appendData(dst, f.Data, f.Text)
		dst = appendHeaders(dst, f.Headers)
		if f.TraceId != "" {
			dst = appendKey(dst, "trace_id")
			dst = appendStr(dst, f.TraceId)
		}
		if f.Timestamp != 0 {
			dst = appendKey(dst, "ts")
			dst = strconv.AppendInt(dst, f.Timestamp, 10)
		}
	case Op_OP_PRESENCE_UPDATE, Op_OP_PRESENCE_LEAVE:
		dst = appendKey(dst, "subject")
		dst = appendStr(dst, f.Subject)
		if f.Member != nil {
			dst = appendKey(dst, "member")
			dst = appendMember(dst, f.Member)
		}
		if f.Op == Op_OP_PRESENCE_LEAVE {
			dst = appendKey(dst, "reason")
			dst = appendStr(dst, f.Reason)
		}
	case Op_OP_PRESENCE:
		dst = appendKey(dst, "subject")
		dst = appendStr(dst, f.Subject)
		// "members" is present iff f.Members != nil: the gateway answers a
		// count_only query with nil and an empty page with an empty,
		// non-nil slice.
		if f.Members != nil {
			dst = append(dst, `,"members":[`...)
			for i, m := range f.Members {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendMember(dst, m)
			}
			dst = append(dst, ']')
		}
		dst = appendKey(dst, "count")
		dst = strconv.AppendUint(dst, uint64(f.Count), 10)
		dst = appendKey(dst, "users")
		dst = strconv.AppendUint(dst, uint64(f.Users), 10)
		if f.Cursor != "" {
			dst = appendKey(dst, "cursor")
			dst = appendStr(dst, f.Cursor)
		}
	case Op_OP_ERROR:
		if f.Error != nil {
			dst = appendKey(dst, "code")
			dst = appendStr(dst, CodeName(f.Error.Code))
			dst = appendKey(dst, "message")
			dst = appendStr(dst, f.Error.Message)
		}
	case Op_OP_WELCOME:
		if w := f.Welcome; w != nil {
			dst = appendKey(dst, "session_id")
			dst = appendStr(dst, w.SessionId)
			dst = appendKey(dst, "node_id")
			dst = appendStr(dst, w.NodeId)
			dst = appendKey(dst, "tenant")
			dst = appendStr(dst, w.Tenant)
			dst = appendKey(dst, "user")
			dst = appendStr(dst, w.User)
			if l := w.Limits; l != nil {
				dst = append(dst, `,"limits":{"max_frame_bytes":`...)
				dst = strconv.AppendUint(dst, uint64(l.MaxFrameBytes), 10)
				dst = append(dst, `,"max_subscriptions":`...)
				dst = strconv.AppendUint(dst, uint64(l.MaxSubscriptions), 10)
				dst = append(dst, `,"outbound_buffer_bytes":`...)
				dst = strconv.AppendUint(dst, uint64(l.OutboundBufferBytes), 10)
				dst = append(dst, `,"publish_rate":`...)
				dst = strconv.AppendUint(dst, uint64(l.PublishRate), 10)
				dst = append(dst, `,"publish_burst":`...)
				dst = strconv.AppendUint(dst, uint64(l.PublishBurst), 10)
				dst = append(dst, '}')
			}
			dst = appendKey(dst, "heartbeat_interval_ms")
			dst = strconv.AppendUint(dst, uint64(w.HeartbeatIntervalMs), 10)
			dst = appendKey(dst, "protocol_version")
			dst = strconv.AppendUint(dst, uint64(w.ProtocolVersion), 10)
		}
	}
	return append(dst, '}')
}

// appendMember appends a PresenceMember object. Its info is written as is:
// the gateway accepts only a JSON object there.
func appendMember(dst []byte, m *PresenceMember) []byte {
	dst = append(dst, `{"user":`...)
	dst = appendStr(dst, m.GetUser())
	dst = appendKey(dst, "session")
	dst = appendStr(dst, m.GetSession())
	dst = appendKey(dst, "node")
	dst = appendStr(dst, m.GetNode())
	dst = appendKey(dst, "joined_at")
	dst = strconv.AppendInt(dst, m.GetJoinedAt(), 10)
	if info := m.GetInfo(); len(info) > 0 {
		dst = appendKey(dst, "info")
		dst = append(dst, info...)
	}
	return append(dst, '}')
}

// memberSizeHint bounds appendMember's output: 75 bytes of keys, quotes
// and a 20-character joined_at, strings escaped at most 6x, info as is.
func memberSizeHint(m *PresenceMember) int {
	return 80 + 6*(len(m.GetUser())+len(m.GetSession())+len(m.GetNode())) + len(m.GetInfo())
}

func appendData(dst, data []byte, text bool) []byte {
	if text {
		dst = appendKey(dst, "data")
		return AppendJSONString(dst, data)
	}
	dst = appendKey(dst, "data_b64")
	dst = append(dst, '"')
	n := base64.StdEncoding.EncodedLen(len(data))
	dst = grow(dst, n)
	base64.StdEncoding.Encode(dst[len(dst):len(dst)+n], data)
	dst = dst[:len(dst)+n]
	return append(dst, '"')
}

func appendHeaders(dst []byte, hs []*Header) []byte {
	if len(hs) == 0 {
		return dst
	}
	dst = append(dst, `,"headers":{`...)
	for i, h := range hs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendStr(dst, h.Key)
		dst = append(dst, ':')
		dst = appendStr(dst, h.Value)
	}
	return append(dst, '}')
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), 2*cap(b)+n)
	copy(nb, b)
	return nb
}

// JSONServerSizeHint returns an upper bound on AppendServerJSON's output for
// a MSG, PRESENCE, PRESENCE_UPDATE or PRESENCE_LEAVE frame, so callers can
// size a buffer once.
func JSONServerSizeHint(f *ServerFrame) int {
	n := 96 + 6*len(f.Subject) + 6*len(f.TraceId)
	switch f.Op {
	case Op_OP_PRESENCE, Op_OP_PRESENCE_UPDATE, Op_OP_PRESENCE_LEAVE:
		// "member", "members":[], "count", "users", "cursor", "reason"
		// keys and numbers beyond the 96 above.
		n += 96 + 6*(len(f.Reason)+len(f.Cursor))
		if f.Member != nil {
			n += memberSizeHint(f.Member)
		}
		for _, m := range f.Members {
			n += 1 + memberSizeHint(m)
		}
	}
	if f.Text {
		n += 6 * len(f.Data)
	} else {
		n += base64.StdEncoding.EncodedLen(len(f.Data))
	}
	for _, h := range f.Headers {
		n += 8 + 6*(len(h.Key)+len(h.Value))
	}
	return n
}

// AppendClientJSON appends the JSON form of a client frame (used by the Go
// client and tests).
func AppendClientJSON(dst []byte, f *ClientFrame) []byte {
	dst = append(dst, `{"op":"`...)
	dst = append(dst, OpName(f.Op)...)
	dst = append(dst, '"')
	if f.Id != 0 {
		dst = appendKey(dst, "id")
		dst = strconv.AppendUint(dst, f.Id, 10)
	}
	if f.Subject != "" {
		dst = appendKey(dst, "subject")
		dst = appendStr(dst, f.Subject)
	}
	if f.Op == Op_OP_PUB {
		dst = appendData(dst, f.Data, f.Text)
	}
	dst = appendHeaders(dst, f.Headers)
	if f.Ack {
		dst = append(dst, `,"ack":true`...)
	}
	if f.Presence {
		dst = append(dst, `,"presence":true`...)
	}
	if len(f.Info) > 0 { // the caller's JSON object, as is
		dst = appendKey(dst, "info")
		dst = append(dst, f.Info...)
	}
	if f.CountOnly {
		dst = append(dst, `,"count_only":true`...)
	}
	if f.Limit != 0 {
		dst = appendKey(dst, "limit")
		dst = strconv.AppendUint(dst, uint64(f.Limit), 10)
	}
	if f.Cursor != "" {
		dst = appendKey(dst, "cursor")
		dst = appendStr(dst, f.Cursor)
	}
	return append(dst, '}')
}

// DecodeServerJSON decodes a server frame's JSON form into a fresh f (used
// by the Go client; allocates).
func DecodeServerJSON(p *fastjson.Parser, data []byte, f *ServerFrame) error {
	v, err := p.ParseBytes(data)
	if err != nil {
		return ErrJSONSyntax
	}
	if v.Type() != fastjson.TypeObject {
		return ErrJSONNotObject
	}
	f.Op = ParseOp(v.GetStringBytes("op"))
	if f.Op == Op_OP_UNSPECIFIED {
		return &FieldError{string(v.GetStringBytes("op")), ErrUnknownOp}
	}
	f.Id = v.GetUint64("id")
	f.Subject = string(v.GetStringBytes("subject"))
	if d := v.Get("data"); d != nil {
		f.Data = append([]byte(nil), d.GetStringBytes()...)
		f.Text = true
	} else if d := v.Get("data_b64"); d != nil {
		b, err := base64.StdEncoding.DecodeString(string(d.GetStringBytes()))
		if err != nil {
			return ErrBadBase64
		}
		f.Data = b
	}
	if ho := v.GetObject("headers"); ho != nil {
		ho.Visit(func(k []byte, hv *fastjson.Value) {
			f.Headers = append(f.Headers, &Header{Key: string(k), Value: string(hv.GetStringBytes())})
		})
	}
	f.TraceId = string(v.GetStringBytes("trace_id"))
	f.Timestamp = v.GetInt64("ts")
	switch f.Op {
	case Op_OP_ERROR:
		f.Error = &Error{Code: ParseCode(string(v.GetStringBytes("code"))), Message: string(v.GetStringBytes("message"))}
	case Op_OP_WELCOME:
		w := &Welcome{
			SessionId:           string(v.GetStringBytes("session_id")),
			NodeId:              string(v.GetStringBytes("node_id")),
			Tenant:              string(v.GetStringBytes("tenant")),
			User:                string(v.GetStringBytes("user")),
			HeartbeatIntervalMs: uint32(v.GetUint("heartbeat_interval_ms")),
			ProtocolVersion:     uint32(v.GetUint("protocol_version")),
		}
		if l := v.Get("limits"); l != nil {
			w.Limits = &Limits{
				MaxFrameBytes:       uint32(l.GetUint("max_frame_bytes")),
				MaxSubscriptions:    uint32(l.GetUint("max_subscriptions")),
				OutboundBufferBytes: uint32(l.GetUint("outbound_buffer_bytes")),
				PublishRate:         uint32(l.GetUint("publish_rate")),
				PublishBurst:        uint32(l.GetUint("publish_burst")),
			}
		}
		f.Welcome = w
	case Op_OP_PRESENCE_UPDATE, Op_OP_PRESENCE_LEAVE:
		if m := v.Get("member"); m != nil {
			f.Member = decodeMember(m)
		}
		f.Reason = string(v.GetStringBytes("reason"))
	case Op_OP_PRESENCE:
		if ms := v.Get("members"); ms != nil {
			a, err := ms.Array()
			if err != nil {
				return &FieldError{"members", ErrJSONField}
			}
			f.Members = make([]*PresenceMember, 0, len(a))
			for _, m := range a {
				f.Members = append(f.Members, decodeMember(m))
			}
		}
		f.Count = uint32(v.GetUint("count"))
		f.Users = uint32(v.GetUint("users"))
		f.Cursor = string(v.GetStringBytes("cursor"))
	}
	return nil
}

func decodeMember(v *fastjson.Value) *PresenceMember {
	m := &PresenceMember{
		User:     string(v.GetStringBytes("user")),
		Session:  string(v.GetStringBytes("session")),
		Node:     string(v.GetStringBytes("node")),
		JoinedAt: v.GetInt64("joined_at"),
	}
	if info := v.Get("info"); info != nil && info.Type() == fastjson.TypeObject {
		m.Info = info.MarshalTo(nil)
	}
	return m
}
