package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/arqonbus/arqonbus/pb"
)

// reference is the Go statement of what the example chain (size cap, ACL,
// malware) decides; the fuzz test holds the Wasm to it.
func reference(req *pb.PolicyRequest) want {
	pub := req.Action == pb.PolicyAction_POLICY_ACTION_PUBLISH
	sub := req.Action == pb.PolicyAction_POLICY_ACTION_SUBSCRIBE
	if pub && max(uint64(req.PayloadSize), uint64(len(req.Payload))) > 65536 {
		return want{code: "LIMIT_EXCEEDED"}
	}
	if pub && req.Role == "reader" {
		return want{code: "AUTHORIZATION_DENIED"}
	}
	first, _, _ := strings.Cut(req.Subject, ".")
	if (pub || sub) && (first == "admin" || first == "*" || first == ">") && req.Role != "admin" {
		return want{code: "AUTHORIZATION_DENIED"}
	}
	if pub && bytes.Contains(asciiLower(req.Payload), []byte("malware")) {
		return want{code: "POLICY_BLOCKED"}
	}
	return want{allow: true}
}

// asciiLower lower-cases ASCII letters only.
func asciiLower(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// FuzzExamplePolicies runs arbitrary requests through the example chain and
// compares with reference: the policies must never fail closed on a valid
// request, and must agree with the Go statement of their rules.
func FuzzExamplePolicies(f *testing.F) {
	e := newEngine(f, policyDir(f, map[string]string{
		"10-size-cap.wasm": sizeCap, "20-acl.wasm": acl, "30-malware.wasm": malware,
	}), nil)
	f.Add(uint8(3), "user", "chat.x", []byte("hello malware"), uint32(0), "k", "v")
	f.Add(uint8(3), "reader", "chat.x", []byte(nil), uint32(0), "", "")
	f.Add(uint8(2), "user", "admin.x", []byte(nil), uint32(0), "", "")
	f.Add(uint8(2), "admin", ">", []byte(nil), uint32(0), "", "")
	f.Add(uint8(3), "user", "x", []byte(nil), uint32(65537), "", "")
	f.Add(uint8(1), "reader", "", []byte("malware"), uint32(1<<31), "", "")
	f.Fuzz(func(t *testing.T, action uint8, role, subject string, payload []byte, size uint32, hk, hv string) {
		req := &pb.PolicyRequest{
			Action: pb.PolicyAction(action%3 + 1), Tenant: "t", User: "u", Role: role,
			Capabilities: []string{role, subject}, Subject: subject,
			Headers: []*pb.Header{{Key: hk, Value: hv}}, Payload: payload, PayloadSize: size,
		}
		got := e.Decide(context.Background(), req)
		w := reference(req)
		if got.Reason != "" || got.Allow != w.allow || (!w.allow && got.Code != w.code) {
			t.Fatalf("request %v: got %+v, want %+v", req, got, w)
		}
	})
}
