package main

import (
	"bytes"
	"fmt"
	"testing"
)

type natsEvent struct {
	kind    natsKind
	subject string
	sid     string
	payload string
}

func collect(t testing.TB, chunks [][]byte) ([]natsEvent, error) {
	t.Helper()
	var p natsParser
	var evs []natsEvent
	for _, c := range chunks {
		err := p.Feed(c, func(k natsKind, s, sid, pl []byte) {
			evs = append(evs, natsEvent{k, string(s), string(sid), string(pl)})
		})
		if err != nil {
			return evs, err
		}
	}
	return evs, nil
}

const natsStream = "INFO {\"server_id\":\"x\"}\r\n+OK\r\nPING\r\nMSG bench.x 1 5\r\nhello\r\n" +
	"MSG bench.y 22 reply.to 0\r\n\r\nHMSG a.b 3 12 17\r\nNATS/1.0\r\n\r\nworld\r\nmsg lower 4 3\r\na\r\n\r\nPONG\r\n-ERR 'Slow Consumer'\r\n"

var natsWant = []natsEvent{
	{natsInfo, "", "", `{"server_id":"x"}`},
	{natsOK, "", "", ""},
	{natsPing, "", "", ""},
	{natsMsg, "bench.x", "1", "hello"},
	{natsMsg, "bench.y", "22", ""},
	{natsMsg, "a.b", "3", "world"},
	{natsMsg, "lower", "4", "a\r\n"},
	{natsPong, "", "", ""},
	{natsErr, "", "", "'Slow Consumer'"},
}

func TestNATSParserSplits(t *testing.T) {
	in := []byte(natsStream)
	// Every way of cutting the stream into two and three chunks parses the same.
	for i := 0; i <= len(in); i++ {
		for _, j := range []int{i, (i + len(in)) / 2, len(in)} {
			chunks := [][]byte{in[:i], in[i:j], in[j:]}
			evs, err := collect(t, chunks)
			if err != nil {
				t.Fatalf("cut %d,%d: %v", i, j, err)
			}
			if fmt.Sprint(evs) != fmt.Sprint(natsWant) {
				t.Fatalf("cut %d,%d:\n got %v\nwant %v", i, j, evs, natsWant)
			}
		}
	}
	// Byte by byte.
	var one [][]byte
	for i := range in {
		one = append(one, in[i:i+1])
	}
	evs, err := collect(t, one)
	if err != nil || fmt.Sprint(evs) != fmt.Sprint(natsWant) {
		t.Fatalf("byte by byte: %v %v", evs, err)
	}
}

func TestNATSParserErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		err  error
	}{
		{"unknown op", "HELLO\r\n", errNATSProto},
		{"msg without size", "MSG a 1\r\n", errNATSMsgArgs},
		{"msg bad size", "MSG a 1 x\r\n", errNATSMsgArgs},
		{"msg too many args", "MSG a 1 b c 3\r\n", errNATSMsgArgs},
		{"payload no crlf", "MSG a 1 2\r\nabcd\r\n", errNATSPayload},
		{"hmsg hdr > total", "HMSG a 1 9 3\r\n", errNATSMsgArgs},
		{"long line", "MSG " + string(bytes.Repeat([]byte("a"), natsMaxLine+10)), errNATSLine},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := collect(t, [][]byte{[]byte(tc.in)})
			if err != tc.err {
				t.Fatalf("got %v, want %v", err, tc.err)
			}
		})
	}
}

func FuzzNATSParser(f *testing.F) {
	f.Add([]byte(natsStream), uint8(7))
	f.Add([]byte("MSG a 1 3\r\nabc\r\nPING\r\n"), uint8(1))
	f.Add([]byte("HMSG a 1 2 4\r\nxyab\r\n"), uint8(3))
	f.Add([]byte("MSG a 1 999999999\r\n"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, cut uint8) {
		// Parsing in one piece and in chunks of size cut+1 must agree.
		whole, errWhole := collect(t, [][]byte{in})
		var chunks [][]byte
		step := int(cut) + 1
		for i := 0; i < len(in); i += step {
			chunks = append(chunks, in[i:min(i+step, len(in))])
		}
		parts, errParts := collect(t, chunks)
		if (errWhole == nil) != (errParts == nil) && errWhole != errNATSLine && errParts != errNATSLine {
			t.Fatalf("whole err %v, chunked err %v", errWhole, errParts)
		}
		if errWhole == nil && errParts == nil && fmt.Sprint(whole) != fmt.Sprint(parts) {
			t.Fatalf("whole %v\nchunked %v", whole, parts)
		}
	})
}
