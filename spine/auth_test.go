package spine

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/pb"
)

// TestEmbeddedListenerRequiresCredentials: an embedded NATS that listens
// refuses clients without credentials, and the brain user cannot publish
// or subscribe in tenant space, so a forged envelope from it is never
// delivered; the gateway user carries the bus.
func TestEmbeddedListenerRequiresCredentials(t *testing.T) {
	hub, err := New(Config{NodeID: "hub", EmbeddedListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)

	if nc, err := nats.Connect(hub.EmbeddedURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without credentials was accepted")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("unauthenticated connect: %v", err)
	}
	if nc, err := nats.Connect(strings.Replace(hub.EmbeddedGatewayURL(), "gateway:", "gateway:x", 1), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a wrong password was accepted")
	}

	node, err := New(Config{URL: hub.EmbeddedGatewayURL(), NodeID: "node"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	var got atomic.Int64
	node.SetHandler(func(env *pb.Envelope) {
		if env != nil {
			got.Add(1)
		}
	})
	if err := node.Watch("acme", ">"); err != nil {
		t.Fatal(err)
	}

	// The brain user: refused in tenant space, both ways.
	violations := make(chan error, 4)
	brain, err := nats.Connect(hub.EmbeddedBrainURL(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		violations <- err
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer brain.Close()
	forged, _ := (&pb.Envelope{Tenant: "acme", Subject: "chat", Payload: []byte("forged"), OriginNode: "evil"}).MarshalVT()
	if err := brain.Publish("arq.acme.chat", forged); err != nil {
		t.Fatal(err)
	}
	_ = brain.Flush()
	select {
	case err := <-violations:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("brain publish in tenant space: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation for the brain's publish")
	}
	if _, err := brain.Subscribe("arq.acme.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = brain.Flush()
	select {
	case err := <-violations:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("brain subscribe in tenant space: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation for the brain's subscription")
	}
	// The brain's own subjects are open to it.
	if _, err := brain.Subscribe("arq.$brain.node.*", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := brain.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-violations:
		t.Fatalf("brain subscribing to its own subjects: %v", err)
	case <-time.After(200 * time.Millisecond):
	}

	// The gateway user carries the bus.
	gw, err := nats.Connect(hub.EmbeddedGatewayURL())
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	real, _ := (&pb.Envelope{Tenant: "acme", Subject: "chat", Payload: []byte("real"), OriginNode: "other"}).MarshalVT()
	if err := gw.Publish("arq.acme.chat", real); err != nil {
		t.Fatal(err)
	}
	_ = gw.Flush()
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := got.Load(); n != 1 {
		t.Fatalf("node received %d envelopes, want only the gateway user's one", n)
	}
}
