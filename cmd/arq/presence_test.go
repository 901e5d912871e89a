package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

func TestPresenceFormat(t *testing.T) {
	m := client.PresenceMember{User: "ann", Session: "s1", Node: "n1", JoinedAt: time.UnixMilli(1700000000123), Info: []byte(`{"name":"Ann"}`)}
	var b bytes.Buffer
	printMembers(&b, []client.PresenceMember{m, {User: "bob", Session: "s2", Node: "n2"}})
	want := "ann\ts1\tn1\t2023-11-14T22:13:20.123Z\t{\"name\":\"Ann\"}\nbob\ts2\tn2\t-\n"
	if b.String() != want {
		t.Errorf("members:\n%q\nwant\n%q", b.String(), want)
	}
	ev := &client.PresenceEvent{Type: client.PresenceLeave, Subject: "room.1", Member: m, Reason: "close"}
	if got, want := formatPresenceEvent(ev), `room.1 leave close ann s1 n1 2023-11-14T22:13:20.123Z {"name":"Ann"}`; got != want {
		t.Errorf("leave %q, want %q", got, want)
	}
	ev = &client.PresenceEvent{Type: client.PresenceUpdate, Subject: "room.1", Member: client.PresenceMember{User: "bob", Session: "s2", Node: "n2", JoinedAt: time.UnixMilli(0).Add(time.Millisecond)}}
	if got, want := formatPresenceEvent(ev), `room.1 join bob s2 n2 1970-01-01T00:00:00.001Z`; got != want {
		t.Errorf("join %q, want %q", got, want)
	}
}
