package pb

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fastjson"
	"google.golang.org/protobuf/proto"
)

func TestDecodeClientJSON(t *testing.T) {
	var p fastjson.Parser
	cases := []struct {
		in   string
		want *ClientFrame
		err  string
	}{
		{`{"op":"sub","id":1,"subject":"chat.lobby"}`, &ClientFrame{Op: Op_OP_SUB, Id: 1, Subject: "chat.lobby"}, ""},
		{`{"op":"unsub","id":2,"subject":"chat.lobby"}`, &ClientFrame{Op: Op_OP_UNSUB, Id: 2, Subject: "chat.lobby"}, ""},
		{`{"op":"pub","id":3,"subject":"chat.lobby","data":"hello","ack":true}`, &ClientFrame{Op: Op_OP_PUB, Id: 3, Subject: "chat.lobby", Data: []byte("hello"), Ack: true, Text: true}, ""},
		{`{"op":"pub","subject":"s","data":"a\"b\u00e9\n"}`, &ClientFrame{Op: Op_OP_PUB, Subject: "s", Data: []byte("a\"bé\n"), Text: true}, ""},
		{`{"op":"pub","subject":"s","data_b64":"AAEC"}`, &ClientFrame{Op: Op_OP_PUB, Subject: "s", Data: []byte{0, 1, 2}}, ""},
		{`{"op":"ping","id":4,"extra":{"x":[1,2]}}`, &ClientFrame{Op: Op_OP_PING, Id: 4}, ""},
		{`{"op":"msg"}`, &ClientFrame{}, "unknown op"},
		{`{"op":"pub","data":"x","data_b64":"eA=="}`, &ClientFrame{}, "both"},
		{`{"op":1}`, &ClientFrame{}, "wrong type"},
		{`{"id":-1,"op":"ping"}`, &ClientFrame{}, "wrong type"},
		{`{"op":"pub","headers":{"a":1}}`, &ClientFrame{}, "wrong type"},
		{`nope`, &ClientFrame{}, "malformed"},
		{`"str"`, &ClientFrame{}, "not a JSON object"},
		{`{"op":"sub","id":5,"subject":"room.1","presence":true,"info":{"name":"ann","tags":["a",{"b":"}"}]}}`,
			&ClientFrame{Op: Op_OP_SUB, Id: 5, Subject: "room.1", Presence: true, Info: []byte(`{"name":"ann","tags":["a",{"b":"}"}]}`)}, ""},
		{`{"op":"sub","subject":"r","presence":false}`, &ClientFrame{Op: Op_OP_SUB, Subject: "r"}, ""},
		// info is kept exactly as written, whitespace and escapes included.
		{"{\"op\":\"sub\",\"subject\":\"r\",\"info\" : { \"a\\u0041\" :\t1 , \"b\":\"x\\\"}\" }\n}",
			&ClientFrame{Op: Op_OP_SUB, Subject: "r", Info: []byte("{ \"a\\u0041\" :\t1 , \"b\":\"x\\\"}\" }")}, ""},
		// an escaped key is the same key; the first of duplicates wins.
		{`{"op":"sub","subject":"r","\u0069nfo":{"n":1},"info":{"n":2}}`, &ClientFrame{Op: Op_OP_SUB, Subject: "r", Info: []byte(`{"n":1}`)}, ""},
		{`{"op":"sub","subject":"r","info":{}}`, &ClientFrame{Op: Op_OP_SUB, Subject: "r", Info: []byte(`{}`)}, ""},
		{`{"op":"presence","id":2,"subject":"room.1"}`, &ClientFrame{Op: Op_OP_PRESENCE, Id: 2, Subject: "room.1"}, ""},
		{`{"op":"presence","id":2,"subject":"room.1","count_only":true,"limit":4294967295,"cursor":"c\u00e9"}`,
			&ClientFrame{Op: Op_OP_PRESENCE, Id: 2, Subject: "room.1", CountOnly: true, Limit: 4294967295, Cursor: "cé"}, ""},
		{`{"op":"presence_update"}`, &ClientFrame{}, "unknown op"},
		{`{"op":"presence_leave"}`, &ClientFrame{}, "unknown op"},
		{`{"op":"sub","subject":"r","info":"x"}`, &ClientFrame{}, "wrong type: info"},
		{`{"op":"sub","subject":"r","info":["x"]}`, &ClientFrame{}, "wrong type: info"},
		{`{"op":"sub","subject":"r","info":null}`, &ClientFrame{}, "wrong type: info"},
		{`{"op":"sub","subject":"r","presence":1}`, &ClientFrame{}, "wrong type: presence"},
		{`{"op":"presence","count_only":"yes"}`, &ClientFrame{}, "wrong type: count_only"},
		{`{"op":"presence","limit":-1}`, &ClientFrame{}, "wrong type: limit"},
		{`{"op":"presence","limit":"10"}`, &ClientFrame{}, "wrong type: limit"},
		{`{"op":"presence","limit":1.5}`, &ClientFrame{}, "wrong type: limit"},
		{`{"op":"presence","limit":4294967296}`, &ClientFrame{}, "wrong type: limit"},
		{`{"op":"presence","cursor":7}`, &ClientFrame{}, "wrong type: cursor"},
	}
	for _, c := range cases {
		var f ClientFrame
		_, err := DecodeClientJSON(&p, []byte(c.in), &f, nil)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if f.Op != c.want.Op || f.Id != c.want.Id || f.Subject != c.want.Subject || string(f.Data) != string(c.want.Data) || f.Ack != c.want.Ack || f.Text != c.want.Text ||
			f.Presence != c.want.Presence || string(f.Info) != string(c.want.Info) || f.CountOnly != c.want.CountOnly || f.Limit != c.want.Limit || f.Cursor != c.want.Cursor {
			t.Errorf("%s: got %+v want %+v", c.in, &f, c.want)
		}
	}
}

func TestHeadersReuse(t *testing.T) {
	var p fastjson.Parser
	var f ClientFrame
	in := []byte(`{"op":"pub","subject":"s","data":"x","headers":{"trace-id":"t1","k":"v"}}`)
	for i := 0; i < 3; i++ {
		ResetClientFrame(&f)
		if _, err := DecodeClientJSON(&p, in, &f, nil); err != nil {
			t.Fatal(err)
		}
		if len(f.Headers) != 2 || f.Headers[0].Key != "trace-id" || f.Headers[1].Value != "v" {
			t.Fatalf("headers %v", f.Headers)
		}
	}
}

// info shares scratch with data_b64 and must not clobber it, on the first
// frame (scratch grows) and on later ones (scratch reused).
func TestInfoScratch(t *testing.T) {
	var p fastjson.Parser
	var f ClientFrame
	var scratch []byte
	in := []byte(`{"op":"pub","subject":"s","data_b64":"AAECAwQ=","info":{"k":"v"}}`)
	for i := 0; i < 3; i++ {
		ResetClientFrame(&f)
		var err error
		if scratch, err = DecodeClientJSON(&p, in, &f, scratch); err != nil {
			t.Fatal(err)
		}
		if string(f.Data) != "\x00\x01\x02\x03\x04" || string(f.Info) != `{"k":"v"}` {
			t.Fatalf("round %d: data %q info %q", i, f.Data, f.Info)
		}
		if cap(f.Info) != len(f.Info) {
			t.Fatal("info can be appended to in place")
		}
	}
	// The decoded info does not point into the caller's buffer.
	buf := append([]byte(nil), `{"op":"sub","subject":"s","info":{"k":"v"}}`...)
	ResetClientFrame(&f)
	if _, err := DecodeClientJSON(&p, buf, &f, nil); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 'x'
	}
	if string(f.Info) != `{"k":"v"}` {
		t.Fatalf("info %q changed with the input buffer", f.Info)
	}
}

func TestIsJSONObject(t *testing.T) {
	for in, want := range map[string]bool{
		`{}`: true, ` {"a":[1,{"b":null}]} `: true, `{"é":"\u0001"}`: true,
		``: false, ` `: false, `[]`: false, `"x"`: false, `1`: false, `null`: false, `{`: false, `{}{}`: false,
		"{\"a\":\"\x01\"}": false, "{\"a\":\"\xff\"}": false, `{"a":1,}`: false,
	} {
		if got := IsJSONObject([]byte(in)); got != want {
			t.Errorf("IsJSONObject(%q) = %v", in, got)
		}
	}
}

func TestRawMember(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"info":{"a":1}}`, `{"a":1}`},
		{` { "x" : [1,{"info":2},"]}"] , "info" : { "a" : "}" } } `, `{ "a" : "}" }`},
		{`{"x":"\"info\"","info":{}}`, `{}`},
		{`{"x":1}`, ""},
		{`{}`, ""},
		{`{"inf":{},"infoo":{}}`, ""},
		{`{"i\u006efo":{"z":true}}`, `{"z":true}`},
		{`{"\u00696fo":{}}`, ""},
	}
	for _, c := range cases {
		if got := rawMember([]byte(c.in), "info"); string(got) != c.want {
			t.Errorf("rawMember(%s) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Decoding reuses the parser, the frame and scratch: once warm, no frame
// kind allocates, presence subs with info and paged queries included.
func TestDecodeClientJSONAllocs(t *testing.T) {
	for _, in := range []string{
		`{"op":"pub","id":3,"subject":"chat.lobby","data":"hello world","ack":true,"headers":{"a":"b"}}`,
		`{"op":"pub","subject":"s","data_b64":"AAECAwQ="}`,
		`{"op":"sub","id":5,"subject":"room.1","presence":true,"info":{"name":"ann","tags":["a","b"]}}`,
		`{"op":"pub","subject":"s","data_b64":"AAECAwQ=","info":{"k":"v"}}`,
		`{"op":"presence","id":2,"subject":"room.1","count_only":true,"limit":100,"cursor":"abc"}`,
	} {
		var p fastjson.Parser
		var f ClientFrame
		var scratch []byte
		data := []byte(in)
		run := func() {
			ResetClientFrame(&f)
			var err error
			if scratch, err = DecodeClientJSON(&p, data, &f, scratch); err != nil {
				t.Fatal(err)
			}
		}
		run()
		if n := testing.AllocsPerRun(200, run); n != 0 {
			t.Errorf("%s: %v allocs per decode", in, n)
		}
	}
}

func TestAppendServerJSONPresenceAllocs(t *testing.T) {
	f := presenceAnswer()
	buf := make([]byte, 0, JSONServerSizeHint(f))
	if n := testing.AllocsPerRun(200, func() { buf = AppendServerJSON(buf[:0], f) }); n != 0 {
		t.Errorf("%v allocs per presence answer", n)
	}
}

func presenceAnswer() *ServerFrame {
	return &ServerFrame{Op: Op_OP_PRESENCE, Id: 2, Subject: "room.1", Count: 3, Users: 2, Cursor: "next\"1",
		Members: []*PresenceMember{
			{User: "ann", Session: "s1", Node: "n1", JoinedAt: 1700000000123, Info: []byte(`{"name":"Ann \"A\"","x":[1,2]}`)},
			{User: "bob\u2028", Session: "s2", Node: "n1", JoinedAt: 1700000000456},
		}}
}

// Presence frames come back from DecodeServerJSON as they went out, and
// "members" is present exactly when Members is non-nil.
func TestPresenceServerJSONRoundTrip(t *testing.T) {
	member := &PresenceMember{User: "ann", Session: "s1", Node: "n1", JoinedAt: 1700000000123, Info: []byte(`{"name":"ann"}`)}
	cases := []struct {
		f    *ServerFrame
		want string
	}{
		{&ServerFrame{Op: Op_OP_PRESENCE_UPDATE, Subject: "room.1", Member: member},
			`{"op":"presence_update","subject":"room.1","member":{"user":"ann","session":"s1","node":"n1","joined_at":1700000000123,"info":{"name":"ann"}}}`},
		{&ServerFrame{Op: Op_OP_PRESENCE_LEAVE, Subject: "room.1", Member: &PresenceMember{User: "bob", Session: "s2", Node: "n2", JoinedAt: 5}, Reason: "ping_timeout"},
			`{"op":"presence_leave","subject":"room.1","member":{"user":"bob","session":"s2","node":"n2","joined_at":5},"reason":"ping_timeout"}`},
		{&ServerFrame{Op: Op_OP_PRESENCE, Id: 2, Subject: "room.1", Members: []*PresenceMember{member}, Count: 1, Users: 1},
			`{"op":"presence","id":2,"subject":"room.1","members":[{"user":"ann","session":"s1","node":"n1","joined_at":1700000000123,"info":{"name":"ann"}}],"count":1,"users":1}`},
		{&ServerFrame{Op: Op_OP_PRESENCE, Id: 3, Subject: "room.1", Members: []*PresenceMember{}, Count: 0, Users: 0},
			`{"op":"presence","id":3,"subject":"room.1","members":[],"count":0,"users":0}`},
		{&ServerFrame{Op: Op_OP_PRESENCE, Id: 4, Subject: "room.1", Count: 1500, Users: 1200},
			`{"op":"presence","id":4,"subject":"room.1","count":1500,"users":1200}`},
		{&ServerFrame{Op: Op_OP_PRESENCE, Id: 5, Subject: "room.1", Members: []*PresenceMember{member}, Count: 2, Users: 2, Cursor: "c2"},
			`{"op":"presence","id":5,"subject":"room.1","members":[{"user":"ann","session":"s1","node":"n1","joined_at":1700000000123,"info":{"name":"ann"}}],"count":2,"users":2,"cursor":"c2"}`},
		{&ServerFrame{Op: Op_OP_ERROR, Id: 6, Error: &Error{Code: ErrorCode_ERROR_CODE_UNAVAILABLE, Message: "presence is unavailable"}},
			`{"op":"error","id":6,"code":"UNAVAILABLE","message":"presence is unavailable"}`},
	}
	for _, c := range cases {
		b := AppendServerJSON(nil, c.f)
		if string(b) != c.want {
			t.Errorf("got  %s\nwant %s", b, c.want)
			continue
		}
		if len(b) > JSONServerSizeHint(c.f) {
			t.Errorf("%s: longer than the hint %d", b, JSONServerSizeHint(c.f))
		}
		var p fastjson.Parser
		var back ServerFrame
		if err := DecodeServerJSON(&p, b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !proto.Equal(&back, c.f) || (back.Members == nil) != (c.f.Members == nil) {
			t.Errorf("%s: decoded %v, want %v", b, &back, c.f)
		}
	}
}

// JSONServerSizeHint is an upper bound for presence frames even at their
// worst: every string escaped 6x, joined_at at its longest, a full page.
func TestPresenceSizeHintBound(t *testing.T) {
	worst := func(i int) *PresenceMember {
		return &PresenceMember{User: strings.Repeat("\x01", 20+i%7), Session: strings.Repeat("\"", 22), Node: strings.Repeat("\u2028", 5),
			JoinedAt: math.MinInt64, Info: []byte(`{"k":"` + strings.Repeat("v", 240) + `"}`)}
	}
	page := &ServerFrame{Op: Op_OP_PRESENCE, Id: math.MaxUint64, Subject: strings.Repeat("\x7f", 256),
		Count: math.MaxUint32, Users: math.MaxUint32, Cursor: strings.Repeat("\x00", 40), Members: []*PresenceMember{}}
	for i := 0; i < 1000; i++ {
		page.Members = append(page.Members, worst(i))
	}
	frames := []*ServerFrame{
		page,
		{Op: Op_OP_PRESENCE, Id: math.MaxUint64, Subject: "r", Count: math.MaxUint32, Users: math.MaxUint32},
		{Op: Op_OP_PRESENCE, Id: 1, Subject: "r", Members: []*PresenceMember{}},
		{Op: Op_OP_PRESENCE_UPDATE, Subject: strings.Repeat("\x01", 256), Member: worst(0)},
		{Op: Op_OP_PRESENCE_LEAVE, Subject: "r", Member: &PresenceMember{JoinedAt: math.MinInt64}, Reason: strings.Repeat("\x01", 30)},
		{Op: Op_OP_PRESENCE_LEAVE, Subject: "r"},
	}
	for _, f := range frames {
		if b, h := AppendServerJSON(nil, f), JSONServerSizeHint(f); len(b) > h {
			t.Errorf("%.80s...: %d bytes, hint %d", b, len(b), h)
		}
	}
}

func TestParseOpNames(t *testing.T) {
	for op, name := range opNames {
		if got := ParseOp([]byte(name)); got != op {
			t.Errorf("ParseOp(%q) = %v, want %v", name, got, op)
		}
	}
	for _, op := range []Op{Op_OP_PRESENCE, Op_OP_PRESENCE_UPDATE, Op_OP_PRESENCE_LEAVE} {
		if OpName(op) == "" {
			t.Errorf("%v has no JSON name", op)
		}
	}
	if CodeName(ErrorCode_ERROR_CODE_UNAVAILABLE) != "UNAVAILABLE" || ParseCode("UNAVAILABLE") != ErrorCode_ERROR_CODE_UNAVAILABLE {
		t.Error("UNAVAILABLE")
	}
}

// Every server frame's JSON is valid JSON that encoding/json reads back.
func TestAppendServerJSONValid(t *testing.T) {
	frames := []*ServerFrame{
		{Op: Op_OP_MSG, Subject: "a.b", Data: []byte("hi \"there\"\n\x01\u2028é"), Text: true, Headers: []*Header{{Key: "k", Value: "v\""}}, TraceId: "t", Timestamp: 42},
		{Op: Op_OP_MSG, Subject: "a.b", Data: []byte{0, 0xff}},
		{Op: Op_OP_MSG, Subject: "a.b", Data: []byte{0xff, 'a'}, Text: true},
		{Op: Op_OP_ACK, Id: 3},
		{Op: Op_OP_PONG, Id: 4},
		{Op: Op_OP_ERROR, Id: 3, Error: &Error{Code: ErrorCode_ERROR_CODE_VALIDATION_ERROR, Message: "bad \"x\""}},
		{Op: Op_OP_WELCOME, Welcome: &Welcome{SessionId: "s", NodeId: "n", Tenant: "t", User: "u", Limits: &Limits{MaxFrameBytes: 1}, HeartbeatIntervalMs: 5, ProtocolVersion: 1}},
		presenceAnswer(),
		{Op: Op_OP_PRESENCE, Id: 9, Subject: "r", Count: 7, Users: 3},
		{Op: Op_OP_PRESENCE_UPDATE, Subject: "r", Member: &PresenceMember{User: "\x01\"", Session: "s", Node: "n", JoinedAt: -1, Info: []byte(`{}`)}},
		{Op: Op_OP_PRESENCE_LEAVE, Subject: "r", Member: &PresenceMember{User: "u"}, Reason: "node_down"},
	}
	for _, f := range frames {
		b := AppendServerJSON(nil, f)
		if len(b) > JSONServerSizeHint(f)+256 {
			t.Errorf("size hint too small for %s", b)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if m["op"] != OpName(f.Op) {
			t.Fatalf("%s: op", b)
		}
		var p fastjson.Parser
		var back ServerFrame
		if err := DecodeServerJSON(&p, b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if f.Op == Op_OP_MSG && (f.Text && utf8.Valid(f.Data) || !f.Text) && string(back.Data) != string(f.Data) {
			t.Fatalf("%s: data %q", b, back.Data)
		}
	}
}

func TestClientJSONRoundTrip(t *testing.T) {
	in := &ClientFrame{Op: Op_OP_PUB, Id: 7, Subject: "x.y", Data: []byte{1, 2, 3}, Ack: true, Headers: []*Header{{Key: "a", Value: "b"}}}
	b := AppendClientJSON(nil, in)
	var p fastjson.Parser
	var out ClientFrame
	if _, err := DecodeClientJSON(&p, b, &out, nil); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if out.Id != 7 || out.Subject != "x.y" || string(out.Data) != "\x01\x02\x03" || out.Text || !out.Ack || len(out.Headers) != 1 {
		t.Fatalf("%s -> %+v", b, &out)
	}
}

// FuzzDecodeClientJSON: the decoder never panics, and whatever it accepts
// encoding/json also accepts as an object.
func FuzzDecodeClientJSON(f *testing.F) {
	for _, s := range []string{
		`{"op":"sub","id":1,"subject":"chat.lobby"}`,
		`{"op":"pub","id":3,"subject":"chat.lobby","data":"hello","ack":true}`,
		`{"op":"pub","subject":"s","data_b64":"AAEC","headers":{"a":"b"}}`,
		`{"op":"ping","id":4}`, `{}`, `[]`, `{"op":"pub","data":"\ud83d\ude00"}`,
		`{"op":"sub","id":5,"subject":"room.1","presence":true,"info":{"name":"ann","tags":["a",{"b":"}"}]}}`,
		`{"op":"sub","subject":"r","\u0069nfo" : { "a\"" : [ 1 , 2 ] } ,"info":{}}`,
		`{"op":"pub","subject":"s","data_b64":"AAEC","info":{"k":"v"}}`,
		`{"op":"presence","id":2,"subject":"room.1","count_only":true,"limit":10,"cursor":"abc"}`,
		`{"op":"presence","limit":-1}`, `{"op":"sub","info":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var p fastjson.Parser
		var fr ClientFrame
		_, err := DecodeClientJSON(&p, in, &fr, nil)
		if err != nil {
			return
		}
		if !utf8.Valid(in) {
			return // the gateway rejects non-UTF-8 text frames before decoding
		}
		var m map[string]json.RawMessage
		if jerr := json.Unmarshal(in, &m); jerr != nil {
			t.Fatalf("accepted %q which encoding/json rejects: %v", in, jerr)
		}
		out := AppendClientJSON(nil, &fr)
		var p2 fastjson.Parser
		var fr2 ClientFrame
		if _, err := DecodeClientJSON(&p2, out, &fr2, nil); err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", out, err)
		}
		if fr2.Op != fr.Op || fr2.Id != fr.Id || fr2.Subject != fr.Subject || fr2.Ack != fr.Ack ||
			fr2.Presence != fr.Presence || string(fr2.Info) != string(fr.Info) || fr2.CountOnly != fr.CountOnly || fr2.Limit != fr.Limit || fr2.Cursor != fr.Cursor {
			t.Fatalf("round trip %q -> %q", in, out)
		}
		if fr.Info != nil {
			// info is the exact text of a JSON object found in the input.
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(fr.Info, &obj); err != nil || !bytes.Contains(in, fr.Info) || !IsJSONObject(fr.Info) {
				t.Fatalf("info %q of %q: %v", fr.Info, in, err)
			}
		}
	})
}

func BenchmarkDecodeClientJSON(b *testing.B) {
	in := []byte(`{"op":"pub","id":3,"subject":"chat.lobby","data":"hello world","ack":true}`)
	var p fastjson.Parser
	var f ClientFrame
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ResetClientFrame(&f)
		if _, err := DecodeClientJSON(&p, in, &f, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendServerJSON(b *testing.B) {
	f := &ServerFrame{Op: Op_OP_MSG, Subject: "chat.lobby", Data: []byte("hello world"), Text: true, Timestamp: 1}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = AppendServerJSON(buf[:0], f)
	}
}
