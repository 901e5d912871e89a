package main

import (
	"testing"

	"github.com/arqonbus/arqonbus/pb"
)

// The load generator's JSON shortcuts must agree with the gateway's encoder.
func TestJSONFrames(t *testing.T) {
	payload := newPayload(40)
	fillPayload(payload, 1234567890123456789)
	msg := pb.AppendServerJSON(nil, &pb.ServerFrame{Op: pb.Op_OP_MSG, Subject: "bench.x", Data: payload, Text: true, Timestamp: 42})
	d, ok := jsonMsgData(msg)
	if !ok || string(d) != string(payload) {
		t.Fatalf("jsonMsgData(%s) = %q %v", msg, d, ok)
	}
	if ts, ok := payloadTime(d); !ok || ts != 1234567890123456789 {
		t.Fatalf("payloadTime = %d %v", ts, ok)
	}
	errf := pb.AppendServerJSON(nil, &pb.ServerFrame{Op: pb.Op_OP_ERROR,
		Error: &pb.Error{Code: pb.ErrorCode_ERROR_CODE_SLOW_CONSUMER, Message: "slow"}})
	if code, ok := jsonErrorCode(errf); !ok || code != "SLOW_CONSUMER" {
		t.Fatalf("jsonErrorCode(%s) = %q %v", errf, code, ok)
	}
	if _, ok := jsonMsgData(errf); ok {
		t.Fatal("error frame taken for a message")
	}
	ack := pb.AppendServerJSON(nil, &pb.ServerFrame{Op: pb.Op_OP_ACK, Id: 1})
	if _, ok := jsonErrorCode(ack); ok {
		t.Fatal("ack taken for an error")
	}
}
