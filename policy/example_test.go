package policy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/policy"
)

// An engine on the example policies: a size cap, an ACL by role and a
// malware word filter, applied to every tenant in that order.
func ExampleEngine() {
	ctx := context.Background()
	e, err := policy.New(ctx, policy.Config{
		Dir:            "../policies",
		Default:        policy.AllowAll,
		ReloadInterval: -1, // no polling in this example
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close(ctx)

	req := &pb.PolicyRequest{
		Action:  pb.PolicyAction_POLICY_ACTION_PUBLISH,
		Tenant:  "acme",
		User:    "alice",
		Role:    "user",
		Subject: "chat.lobby",
		Payload: []byte("download this malware now"),
	}
	fmt.Println("needs payload:", e.NeedsPayload("acme"))
	d := e.Decide(ctx, req)
	fmt.Println(d.Allow, d.Code, d.Message, d.Policy)

	req.Payload = []byte("hello")
	fmt.Println(e.Decide(ctx, req).Allow)

	req.Role = "reader"
	d = e.Decide(ctx, req)
	fmt.Println(d.Allow, d.Code, d.Message)
	// Output:
	// needs payload: true
	// false POLICY_BLOCKED payload contains the word malware 30-malware.wasm
	// true
	// false AUTHORIZATION_DENIED role reader may not publish
}
