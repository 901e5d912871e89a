package pb

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fastjson"
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
		if f.Op != c.want.Op || f.Id != c.want.Id || f.Subject != c.want.Subject || string(f.Data) != string(c.want.Data) || f.Ack != c.want.Ack || f.Text != c.want.Text {
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
		if fr2.Op != fr.Op || fr2.Id != fr.Id || fr2.Subject != fr.Subject || fr2.Ack != fr.Ack {
			t.Fatalf("round trip %q -> %q", in, out)
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
