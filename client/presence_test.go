package client

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/valyala/fastjson"

	"github.com/arqonbus/arqonbus/pb"
)

// presenceServer is a one-room-per-subject WebSocket peer that answers the
// way docs/PROTOCOL.md says a gateway does: it checks the client's frames in
// both codecs and answers presence subs and queries. It has no brain: the
// members of a room are the fixed ones below plus this connection once it
// has joined. Subjects starting with "down." answer UNAVAILABLE;
// "loop." pages forever (a broken server).
type presenceServer struct {
	ln  net.Listener
	url string
}

var presetMembers = []*pb.PresenceMember{
	{User: "ann", Session: "s-ann", Node: "n1", JoinedAt: 1700000000001, Info: []byte(`{"name":"Ann"}`)},
	{User: "bob", Session: "s-bob1", Node: "n1", JoinedAt: 1700000000002},
	{User: "bob", Session: "s-bob2", Node: "n2", JoinedAt: 1700000000003},
	{User: "cyd", Session: "s-cyd", Node: "n2", JoinedAt: 1700000000004},
	{User: "zed", Session: "s-zed", Node: "n3", JoinedAt: 1700000000005},
}

func startPresenceServer(t *testing.T) *presenceServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &presenceServer{ln: ln, url: "ws://" + ln.Addr().String() + "/v1/socket"}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(t, conn)
		}
	}()
	return s
}

type fakeConn struct {
	conn   net.Conn
	proto  bool // the connection's codec
	joined map[string]*pb.PresenceMember
	parser fastjson.Parser
}

func (c *fakeConn) write(f *pb.ServerFrame, proto bool) error {
	if proto {
		b, err := f.MarshalVT()
		if err != nil {
			return err
		}
		return wsutil.WriteServerMessage(c.conn, ws.OpBinary, b)
	}
	return wsutil.WriteServerMessage(c.conn, ws.OpText, pb.AppendServerJSON(nil, f))
}

func errFrame(id uint64, code pb.ErrorCode, msg string) *pb.ServerFrame {
	return &pb.ServerFrame{Op: pb.Op_OP_ERROR, Id: id, Error: &pb.Error{Code: code, Message: msg}}
}

func (s *presenceServer) serve(t *testing.T, conn net.Conn) {
	defer conn.Close()
	c := &fakeConn{conn: conn, joined: map[string]*pb.PresenceMember{}}
	u := ws.Upgrader{Protocol: func(p []byte) bool {
		switch string(p) {
		case "arqon.v1.proto":
			c.proto = true
			return true
		case "arqon.v1.json":
			return true
		}
		return false
	}}
	if _, err := u.Upgrade(conn); err != nil {
		return
	}
	if c.write(&pb.ServerFrame{Op: pb.Op_OP_WELCOME, Welcome: &pb.Welcome{SessionId: "s-me", NodeId: "n-me", Tenant: "t", User: "me", ProtocolVersion: 1}}, c.proto) != nil {
		return
	}
	for {
		data, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		f := &pb.ClientFrame{}
		if op == ws.OpText {
			if _, err := pb.DecodeClientJSON(&c.parser, data, f, nil); err != nil {
				t.Errorf("client sent bad JSON %s: %v", data, err)
				return
			}
			// f points into the parser: keep what we need.
			f = &pb.ClientFrame{Op: f.Op, Id: f.Id, Subject: strings.Clone(f.Subject), Presence: f.Presence,
				Info: append([]byte(nil), f.Info...), CountOnly: f.CountOnly, Limit: f.Limit, Cursor: strings.Clone(f.Cursor)}
		} else if err := f.UnmarshalVT(data); err != nil {
			t.Errorf("client sent bad Protobuf: %v", err)
			return
		}
		if err := c.handle(f, op == ws.OpBinary); err != nil {
			return
		}
	}
}

func (c *fakeConn) handle(f *pb.ClientFrame, proto bool) error {
	switch f.Op {
	case pb.Op_OP_PING:
		return c.write(&pb.ServerFrame{Op: pb.Op_OP_PONG, Id: f.Id}, proto)
	case pb.Op_OP_SUB:
		if !f.Presence {
			return c.write(&pb.ServerFrame{Op: pb.Op_OP_ACK, Id: f.Id}, proto)
		}
		if strings.ContainsAny(f.Subject, "*>") {
			return c.write(errFrame(f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "presence needs a literal subject"), proto)
		}
		if len(f.Info) > 256 {
			return c.write(errFrame(f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "presence info too large"), proto)
		}
		me := &pb.PresenceMember{User: "me", Session: "s-me", Node: "n-me", JoinedAt: time.Now().UnixMilli(), Info: f.Info}
		c.joined[f.Subject] = me
		if err := c.write(&pb.ServerFrame{Op: pb.Op_OP_ACK, Id: f.Id}, proto); err != nil {
			return err
		}
		// Our own join, then another member's leave, in the connection's codec.
		if err := c.write(&pb.ServerFrame{Op: pb.Op_OP_PRESENCE_UPDATE, Subject: f.Subject, Member: me}, c.proto); err != nil {
			return err
		}
		return c.write(&pb.ServerFrame{Op: pb.Op_OP_PRESENCE_LEAVE, Subject: f.Subject, Member: presetMembers[4], Reason: "ping_timeout"}, c.proto)
	case pb.Op_OP_UNSUB:
		delete(c.joined, f.Subject)
		return c.write(&pb.ServerFrame{Op: pb.Op_OP_ACK, Id: f.Id}, proto)
	case pb.Op_OP_PRESENCE:
		return c.write(c.answer(f), proto)
	}
	return c.write(errFrame(f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "unknown op"), proto)
}

func (c *fakeConn) answer(f *pb.ClientFrame) *pb.ServerFrame {
	switch {
	case strings.ContainsAny(f.Subject, "*>"):
		return errFrame(f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "presence needs a literal subject")
	case strings.HasPrefix(f.Subject, "down."):
		return errFrame(f.Id, pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "presence is unavailable")
	case strings.HasPrefix(f.Subject, "loop."):
		return &pb.ServerFrame{Op: pb.Op_OP_PRESENCE, Id: f.Id, Subject: f.Subject, Members: []*pb.PresenceMember{}, Cursor: "again"}
	}
	var room []*pb.PresenceMember
	if !strings.HasPrefix(f.Subject, "empty.") {
		room = append(room, presetMembers...)
	}
	if me := c.joined[f.Subject]; me != nil {
		room = append(room, me)
	}
	users := map[string]bool{}
	for _, m := range room {
		users[m.User] = true
	}
	r := &pb.ServerFrame{Op: pb.Op_OP_PRESENCE, Id: f.Id, Subject: f.Subject, Count: uint32(len(room)), Users: uint32(len(users))}
	if f.CountOnly {
		return r
	}
	limit := int(f.Limit)
	if limit == 0 || limit > 1000 {
		limit = 1000 // the default and the most
	}
	start := 0
	if f.Cursor != "" {
		n, err := strconv.Atoi(f.Cursor)
		if err != nil || n < 0 || n > len(room) {
			return errFrame(f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "bad cursor")
		}
		start = n
	}
	end := min(start+limit, len(room))
	r.Members = append([]*pb.PresenceMember{}, room[start:end]...) // non-nil: "members" present
	if end < len(room) {
		r.Cursor = strconv.Itoa(end)
	}
	return r
}

func dialCodec(t *testing.T, s *presenceServer, codec Codec) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, Options{URL: s.url, Token: "x", Codec: codec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func forCodecs(t *testing.T, fn func(t *testing.T, c *Client)) {
	s := startPresenceServer(t)
	for _, codec := range []Codec{JSON, Protobuf} {
		name := "json"
		if codec == Protobuf {
			name = "proto"
		}
		t.Run(name, func(t *testing.T) { fn(t, dialCodec(t, s, codec)) })
	}
}

func nextEvent(t *testing.T, s *Subscription) *PresenceEvent {
	t.Helper()
	select {
	case ev, ok := <-s.Presence:
		if !ok {
			t.Fatal("presence channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no presence event")
	}
	return nil
}

func TestSubscribePresenceEvents(t *testing.T) {
	forCodecs(t, func(t *testing.T, c *Client) {
		ctx := context.Background()
		plain, err := c.Subscribe(ctx, "room.1")
		if err != nil {
			t.Fatal(err)
		}
		if plain.Presence != nil {
			t.Fatal("a plain subscription has a presence channel")
		}
		before := time.Now().Add(-time.Second)
		room, err := c.SubscribePresence(ctx, "room.1", []byte(`{"name":"me","n":[1,2]}`))
		if err != nil {
			t.Fatal(err)
		}
		ev := nextEvent(t, room)
		if ev.Type != PresenceUpdate || ev.Subject != "room.1" || ev.Member.User != "me" || ev.Member.Session != "s-me" ||
			ev.Member.Node != "n-me" || string(ev.Member.Info) != `{"name":"me","n":[1,2]}` || ev.Member.JoinedAt.Before(before) || ev.Reason != "" {
			t.Fatalf("join %+v", ev)
		}
		ev = nextEvent(t, room)
		if ev.Type != PresenceLeave || ev.Member.User != "zed" || ev.Reason != "ping_timeout" || ev.Member.Info != nil ||
			ev.Member.JoinedAt.UnixMilli() != 1700000000005 {
			t.Fatalf("leave %+v", ev)
		}
		if ev.Type.String() != "leave" {
			t.Fatal(ev.Type.String())
		}
		if err := room.Unsubscribe(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-room.Presence; ok {
			t.Fatal("presence channel open after Unsubscribe")
		}
		if _, ok := <-room.C; ok {
			t.Fatal("C open after Unsubscribe")
		}
		// The plain subscription still stands, the membership ended.
		a, err := c.Presence(ctx, "room.1", PresenceOptions{CountOnly: true})
		if err != nil || a.Count != len(presetMembers) {
			t.Fatalf("after leaving: %+v %v", a, err)
		}
		if err := plain.Unsubscribe(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSubscribePresenceErrors(t *testing.T) {
	forCodecs(t, func(t *testing.T, c *Client) {
		ctx := context.Background()
		for _, info := range []string{`[1]`, `"x"`, `{"a":`, ` `, `null`, "{\"a\":\"\xff\"}", "{\"a\":\"\x01\"}", `{}{}`} {
			if _, err := c.SubscribePresence(ctx, "room.1", []byte(info)); !errors.Is(err, ErrPresenceInfo) {
				t.Errorf("info %q: %v", info, err)
			}
		}
		_, err := c.SubscribePresence(ctx, "room.*", nil)
		var se *ServerError
		if !errors.As(err, &se) || se.Code != "VALIDATION_ERROR" || se.Message != "presence needs a literal subject" || !errors.Is(err, ErrValidation) {
			t.Fatalf("wildcard presence sub: %v", err)
		}
		if _, err := c.SubscribePresence(ctx, "room.1", []byte(`{"x":"`+strings.Repeat("a", 300)+`"}`)); !errors.Is(err, ErrValidation) {
			t.Fatalf("big info: %v", err)
		}
		// The connection is still usable.
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPresenceQuery(t *testing.T) {
	forCodecs(t, func(t *testing.T, c *Client) {
		ctx := context.Background()
		if _, err := c.SubscribePresence(ctx, "room.2", []byte(`{"name":"me"}`)); err != nil {
			t.Fatal(err)
		}
		a, err := c.Presence(ctx, "room.2", PresenceOptions{CountOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if a.Members != nil || a.Count != 6 || a.Users != 5 || a.Cursor != "" {
			t.Fatalf("count only: %+v", a)
		}
		// Pages of 4: the first has a cursor, the last none.
		a, err = c.Presence(ctx, "room.2", PresenceOptions{Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Members) != 4 || a.Cursor == "" || a.Count != 6 || a.Users != 5 || a.Members[0].User != "ann" || string(a.Members[0].Info) != `{"name":"Ann"}` {
			t.Fatalf("page 1: %+v", a)
		}
		a, err = c.Presence(ctx, "room.2", PresenceOptions{Limit: 4, Cursor: a.Cursor})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Members) != 2 || a.Cursor != "" || a.Members[1].User != "me" {
			t.Fatalf("page 2: %+v", a)
		}
		all, err := c.PresenceAll(ctx, "room.2")
		if err != nil {
			t.Fatal(err)
		}
		if len(all.Members) != 6 || all.Count != 6 || all.Users != 5 || all.Cursor != "" {
			t.Fatalf("all: %+v", all)
		}
		// An empty room: an empty (non-nil) page and zero counts.
		a, err = c.Presence(ctx, "empty.room", PresenceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a.Members == nil || len(a.Members) != 0 || a.Count != 0 || a.Users != 0 {
			t.Fatalf("empty room: %+v", a)
		}
		if _, err := c.Presence(ctx, "room.2", PresenceOptions{Limit: -1}); err == nil {
			t.Fatal("negative limit accepted")
		}
		if a, err := c.Presence(ctx, "room.2", PresenceOptions{Limit: 5000}); err != nil || len(a.Members) != 6 {
			t.Fatalf("limit 5000: %+v %v", a, err)
		}
	})
}

func TestPresenceUnavailable(t *testing.T) {
	forCodecs(t, func(t *testing.T, c *Client) {
		ctx := context.Background()
		_, err := c.Presence(ctx, "down.room", PresenceOptions{})
		var se *ServerError
		if !errors.Is(err, ErrUnavailable) || !errors.As(err, &se) || se.Code != "UNAVAILABLE" || se.Message != "presence is unavailable" {
			t.Fatalf("got %v", err)
		}
		if errors.Is(err, ErrValidation) {
			t.Fatal("UNAVAILABLE is a VALIDATION_ERROR")
		}
		if _, err := c.PresenceAll(ctx, "down.room"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("PresenceAll: %v", err)
		}
		if _, err := c.PresenceAll(ctx, "loop.room"); !errors.Is(err, ErrPresenceCursor) {
			t.Fatalf("a repeated cursor: %v", err)
		}
	})
}
