package client_test

// End-to-end tests of the client's presence API against a real gateway, an
// embedded NATS server and a brain with the memory store, in both codecs.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/brain"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/spine"
)

var e2eSecret = []byte("0123456789abcdef0123456789abcdef-client-e2e")

type bus struct {
	url string
}

// startBus runs a single node: gateway, embedded NATS and, with withBrain,
// a brain keeping presence in memory.
func startBus(t *testing.T, withBrain bool) *bus {
	t.Helper()
	id := fmt.Sprintf("node-e2e-%d", time.Now().UnixNano())
	sp, err := spine.New(spine.Config{NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	if withBrain {
		nc, err := sp.NewConn("brain-" + id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := brain.New(brain.Config{Conn: nc, Prefix: sp.Prefix(), Store: brain.NewMemoryStore()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close(); nc.Close() })
	}
	v, err := auth.NewVerifier(e2eSecret)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Listen: "127.0.0.1:0", NodeID: id, Verifier: v, Spine: sp,
		Presence: gateway.PresenceConfig{QueryTimeout: 500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := gw.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Serve(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	})
	return &bus{url: "ws://" + ln.Addr().String() + gateway.SocketPath}
}

func (b *bus) dial(t *testing.T, tenant, user string, codec client.Codec) *client.Client {
	t.Helper()
	tok, err := auth.Mint(e2eSecret, auth.MintOptions{Tenant: tenant, User: user, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(testCtx(t), client.Options{URL: b.url, Token: tok, Codec: codec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// event waits for the next presence event of s.
func event(t *testing.T, s *client.Subscription) *client.PresenceEvent {
	t.Helper()
	select {
	case ev, ok := <-s.Presence:
		if !ok {
			t.Fatal("presence channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no presence event in 5 s")
	}
	return nil
}

func expectEvent(t *testing.T, s *client.Subscription, typ client.PresenceEventType, session, reason string) *client.PresenceEvent {
	t.Helper()
	ev := event(t, s)
	if ev.Type != typ || ev.Member.Session != session || ev.Reason != reason || ev.Subject != s.Pattern {
		t.Fatalf("got %v %+v, want %v of %s (reason %q)", ev.Type, ev, typ, session, reason)
	}
	return ev
}

// noEvent checks that s gets no presence event for a while.
func noEvent(t *testing.T, s *client.Subscription) {
	t.Helper()
	select {
	case ev := <-s.Presence:
		t.Fatalf("unexpected event %v %+v", ev.Type, ev)
	case <-time.After(300 * time.Millisecond):
	}
}

func codecs(t *testing.T, fn func(t *testing.T, codec client.Codec)) {
	for _, c := range []struct {
		name  string
		codec client.Codec
	}{{"json", client.JSON}, {"proto", client.Protobuf}} {
		t.Run(c.name, func(t *testing.T) { fn(t, c.codec) })
	}
}

func TestE2EPresenceJoinLeaveQuery(t *testing.T) {
	b := startBus(t, true)
	codecs(t, func(t *testing.T, codec client.Codec) {
		ctx := testCtx(t)
		room := fmt.Sprintf("room.%d", codec)
		ann := b.dial(t, "acme", "ann", codec)
		bob := b.dial(t, "acme", "bob", codec)
		before := time.Now().Add(-time.Second)

		annRoom, err := ann.SubscribePresence(ctx, room, []byte(`{"name":"Ann"}`))
		if err != nil {
			t.Fatal(err)
		}
		ev := expectEvent(t, annRoom, client.PresenceUpdate, ann.Welcome().SessionId, "")
		if ev.Member.User != "ann" || ev.Member.Node != ann.Welcome().NodeId || string(ev.Member.Info) != `{"name":"Ann"}` ||
			ev.Member.JoinedAt.Before(before) || ev.Member.JoinedAt.After(time.Now()) {
			t.Fatalf("own join %+v", ev.Member)
		}
		bobRoom, err := bob.SubscribePresence(ctx, room, nil)
		if err != nil {
			t.Fatal(err)
		}
		expectEvent(t, bobRoom, client.PresenceUpdate, bob.Welcome().SessionId, "")
		if ev := expectEvent(t, annRoom, client.PresenceUpdate, bob.Welcome().SessionId, ""); ev.Member.Info != nil {
			t.Fatalf("bob has info %q", ev.Member.Info)
		}

		// Members get the room's messages too.
		if err := bob.PublishAck(ctx, room, []byte("hi"), client.PublishOptions{Text: true}); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*client.Subscription{annRoom, bobRoom} {
			select {
			case m := <-s.C:
				if string(m.Data) != "hi" {
					t.Fatalf("message %q", m.Data)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no message")
			}
		}

		a, err := ann.Presence(ctx, room, client.PresenceOptions{CountOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if a.Members != nil || a.Count != 2 || a.Users != 2 || a.Cursor != "" {
			t.Fatalf("count only: %+v", a)
		}
		all, err := bob.PresenceAll(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		if len(all.Members) != 2 || all.Count != 2 {
			t.Fatalf("all: %+v", all)
		}
		byUser := map[string]client.PresenceMember{}
		for _, m := range all.Members {
			byUser[m.User] = m
		}
		if string(byUser["ann"].Info) != `{"name":"Ann"}` || byUser["bob"].Session != bob.Welcome().SessionId {
			t.Fatalf("members %+v", all.Members)
		}

		// bob leaves by unsubscribing, joins again, leaves by closing.
		if err := bobRoom.Unsubscribe(ctx); err != nil {
			t.Fatal(err)
		}
		expectEvent(t, annRoom, client.PresenceLeave, bob.Welcome().SessionId, "unsubscribe")
		if _, err := bob.SubscribePresence(ctx, room, nil); err != nil {
			t.Fatal(err)
		}
		expectEvent(t, annRoom, client.PresenceUpdate, bob.Welcome().SessionId, "")
		bob.Close()
		expectEvent(t, annRoom, client.PresenceLeave, bob.Welcome().SessionId, "close")

		if a, err := ann.Presence(ctx, room, client.PresenceOptions{}); err != nil || len(a.Members) != 1 || a.Count != 1 {
			t.Fatalf("after bob left: %+v %v", a, err)
		}
	})
}

func TestE2EPresencePaging(t *testing.T) {
	b := startBus(t, true)
	codecs(t, func(t *testing.T, codec client.Codec) {
		ctx := testCtx(t)
		room := fmt.Sprintf("paged.%d", codec)
		for i := 0; i < 5; i++ {
			c := b.dial(t, "acme", fmt.Sprintf("u%d", i%3), codec)
			s, err := c.SubscribePresence(ctx, room, nil)
			if err != nil {
				t.Fatal(err)
			}
			expectEvent(t, s, client.PresenceUpdate, c.Welcome().SessionId, "")
		}
		q := b.dial(t, "acme", "q", codec) // not a member
		seen := map[string]bool{}
		cursor, pages := "", 0
		for {
			a, err := q.Presence(ctx, room, client.PresenceOptions{Limit: 2, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(a.Members) > 2 || a.Count != 5 || a.Users != 3 {
				t.Fatalf("page %d: %+v", pages, a)
			}
			for _, m := range a.Members {
				if seen[m.Session] {
					t.Fatalf("%s listed twice", m.Session)
				}
				seen[m.Session] = true
			}
			if a.Cursor == "" {
				break
			}
			cursor = a.Cursor
		}
		if pages != 3 || len(seen) != 5 {
			t.Fatalf("%d pages, %d members", pages, len(seen))
		}
		all, err := q.PresenceAll(ctx, room)
		if err != nil || len(all.Members) != 5 {
			t.Fatalf("all: %+v %v", all, err)
		}
		if a, err := q.Presence(ctx, "nobody.here", client.PresenceOptions{}); err != nil || a.Members == nil || len(a.Members) != 0 || a.Count != 0 {
			t.Fatalf("an empty room: %+v %v", a, err)
		}
	})
}

func TestE2EPresenceTenantIsolation(t *testing.T) {
	b := startBus(t, true)
	ctx := testCtx(t)
	a := b.dial(t, "acme", "ann", client.JSON)
	x := b.dial(t, "other", "ann", client.Protobuf)
	aRoom, err := a.SubscribePresence(ctx, "room.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	expectEvent(t, aRoom, client.PresenceUpdate, a.Welcome().SessionId, "")
	if ans, err := x.Presence(ctx, "room.1", client.PresenceOptions{}); err != nil || ans.Count != 0 || len(ans.Members) != 0 {
		t.Fatalf("other tenant sees %+v %v", ans, err)
	}
	xRoom, err := x.SubscribePresence(ctx, "room.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	expectEvent(t, xRoom, client.PresenceUpdate, x.Welcome().SessionId, "")
	noEvent(t, aRoom)
	if ans, err := a.Presence(ctx, "room.1", client.PresenceOptions{}); err != nil || ans.Count != 1 || ans.Members[0].Session != a.Welcome().SessionId {
		t.Fatalf("acme sees %+v %v", ans, err)
	}
}

func TestE2EPresenceErrors(t *testing.T) {
	b := startBus(t, true)
	codecs(t, func(t *testing.T, codec client.Codec) {
		ctx := testCtx(t)
		c := b.dial(t, "acme", "ann", codec)
		var se *client.ServerError
		for _, subject := range []string{"room.*", "room.>"} {
			_, err := c.SubscribePresence(ctx, subject, nil)
			if !errors.As(err, &se) || se.Code != "VALIDATION_ERROR" || se.Message != "presence needs a literal subject" {
				t.Fatalf("presence sub %s: %v", subject, err)
			}
			if _, err := c.Presence(ctx, subject, client.PresenceOptions{}); !errors.Is(err, client.ErrValidation) {
				t.Fatalf("query %s: %v", subject, err)
			}
		}
		big := []byte(`{"x":"` + strings.Repeat("a", 300) + `"}`)
		if _, err := c.SubscribePresence(ctx, "room.1", big); !errors.As(err, &se) || se.Code != "VALIDATION_ERROR" {
			t.Fatalf("info of %d bytes: %v", len(big), err)
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestE2EPresenceUnavailable(t *testing.T) {
	b := startBus(t, false) // no brain answers
	codecs(t, func(t *testing.T, codec client.Codec) {
		ctx := testCtx(t)
		c := b.dial(t, "acme", "ann", codec)
		// With no brain subscribed NATS says so at once (no responders);
		// a brain that does not answer takes the query timeout.
		_, err := c.Presence(ctx, "room.1", client.PresenceOptions{})
		var se *client.ServerError
		if !errors.Is(err, client.ErrUnavailable) || !errors.As(err, &se) || se.Code != "UNAVAILABLE" {
			t.Fatalf("got %v", err)
		}
		if _, err := c.PresenceAll(ctx, "room.1"); !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("PresenceAll: %v", err)
		}
		// The connection is unaffected.
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
