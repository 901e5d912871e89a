package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/arqonbus/arqonbus/pb"
)

// PresenceMember is one connection's membership in a room. One user with
// two connections in a room is two members with the same User.
type PresenceMember struct {
	User     string    // the member's token sub
	Session  string    // the member connection's session id
	Node     string    // the gateway node it is connected to
	JoinedAt time.Time // millisecond precision
	// Info is the JSON object the member gave when it joined, or nil. Over
	// the JSON codec it arrives re-encoded without insignificant whitespace.
	Info []byte
}

// PresenceEventType tells a join from a leave.
type PresenceEventType int

// Presence event types, named after the protocol's ops.
const (
	PresenceUpdate PresenceEventType = iota + 1 // a member joined
	PresenceLeave                               // a member left
)

func (t PresenceEventType) String() string {
	switch t {
	case PresenceUpdate:
		return "join"
	case PresenceLeave:
		return "leave"
	}
	return fmt.Sprintf("PresenceEventType(%d)", int(t))
}

// PresenceEvent is a join or leave in a room the connection is a member of.
type PresenceEvent struct {
	Type    PresenceEventType
	Subject string // the room
	Member  PresenceMember
	// Reason, for a leave: "unsubscribe", "close", "reset", "ping_timeout",
	// "token_expired", "node_down", "shutdown", "slow_consumer", "kicked",
	// "sync" (see docs/PROTOCOL.md).
	Reason string
}

// PresenceOptions are the optional settings of a presence query.
type PresenceOptions struct {
	// CountOnly asks for Count and Users only, no members.
	CountOnly bool
	// Limit bounds the members of one answer; 0 means the server's default
	// (1000, also the most it sends).
	Limit int
	// Cursor continues a paged query: the Cursor of the previous answer.
	Cursor string
}

// PresenceAnswer is one answer to a presence query.
type PresenceAnswer struct {
	// Members is one page of the room's members; nil for CountOnly.
	Members []PresenceMember
	// Count is the room's members (connections), Users its distinct users.
	Count int
	Users int
	// Cursor, when not empty, asks for the next page (PresenceOptions.Cursor);
	// empty on the last page.
	Cursor string
}

func memberFromPB(m *pb.PresenceMember) PresenceMember {
	pm := PresenceMember{User: m.GetUser(), Session: m.GetSession(), Node: m.GetNode(), Info: m.GetInfo()}
	if ms := m.GetJoinedAt(); ms != 0 {
		pm.JoinedAt = time.UnixMilli(ms)
	}
	if len(pm.Info) == 0 {
		pm.Info = nil
	}
	return pm
}

// dispatchPresence hands a PRESENCE_UPDATE/LEAVE to every presence
// subscription of its subject.
func (c *Client) dispatchPresence(cn *conn, f *pb.ServerFrame) {
	ev := &PresenceEvent{Type: PresenceUpdate, Subject: f.Subject, Reason: f.Reason}
	if f.Op == pb.Op_OP_PRESENCE_LEAVE {
		ev.Type = PresenceLeave
	}
	if f.Member != nil {
		ev.Member = memberFromPB(f.Member)
	}
	c.mu.Lock()
	var targets []target
	for s := range c.subs {
		if s.Presence != nil && s.Pattern == f.Subject {
			targets = append(targets, target{s, s.live})
		}
	}
	c.mu.Unlock()
	for _, tg := range targets {
		s := tg.s
		if !deliver(c, cn, s, s.Presence, ev, tg.live) {
			return
		}
	}
}

// Presence asks for the members of the room subject (a literal subject) in
// this connection's tenant. It needs no subscription. A room nobody is in
// answers with no members and zero counts. When the presence service cannot
// answer, the error is a *ServerError with Code "UNAVAILABLE"
// (errors.Is(err, ErrUnavailable)).
func (c *Client) Presence(ctx context.Context, subject string, o PresenceOptions) (*PresenceAnswer, error) {
	if o.Limit < 0 || uint64(o.Limit) > math.MaxUint32 {
		return nil, fmt.Errorf("client: presence limit %d out of range", o.Limit)
	}
	r, err := c.roundTrip(ctx, &pb.ClientFrame{Op: pb.Op_OP_PRESENCE, Subject: subject,
		CountOnly: o.CountOnly, Limit: uint32(o.Limit), Cursor: o.Cursor}, nil)
	if err != nil {
		return nil, err
	}
	if r.Op != pb.Op_OP_PRESENCE {
		return nil, fmt.Errorf("client: presence query answered with %v", r.Op)
	}
	a := &PresenceAnswer{Count: int(r.Count), Users: int(r.Users), Cursor: r.Cursor}
	if !o.CountOnly {
		a.Members = make([]PresenceMember, 0, len(r.Members))
		for _, m := range r.Members {
			a.Members = append(a.Members, memberFromPB(m))
		}
	}
	return a, nil
}

// ErrPresenceCursor is returned by PresenceAll when the server repeats a
// cursor, which would page forever.
var ErrPresenceCursor = errors.New("client: presence paging did not advance")

// PresenceAll pages through all members of the room subject (pages of the
// server's default size) and returns them in one answer whose Count and
// Users are those of the last page. Members joining or leaving while it
// pages may be missed or seen twice; a page that fails fails the whole.
func (c *Client) PresenceAll(ctx context.Context, subject string) (*PresenceAnswer, error) {
	all := &PresenceAnswer{Members: []PresenceMember{}}
	seen := map[string]bool{}
	for cursor := ""; ; {
		a, err := c.Presence(ctx, subject, PresenceOptions{Cursor: cursor})
		if err != nil {
			return nil, err
		}
		all.Members = append(all.Members, a.Members...)
		all.Count, all.Users = a.Count, a.Users
		if a.Cursor == "" {
			return all, nil
		}
		if seen[a.Cursor] {
			return nil, ErrPresenceCursor
		}
		seen[a.Cursor] = true
		cursor = a.Cursor
	}
}
