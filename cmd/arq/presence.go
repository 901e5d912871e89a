package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// runPresence prints a room's members or counts:
//
//	arq presence [--count] [--limit N [--cursor C]] SUBJECT
//
// Without --limit it pages through every member; with it, it prints one page
// and, when there are more, the next page's cursor on stderr.
func runPresence(args []string) error {
	fs := flag.NewFlagSet("presence", flag.ContinueOnError)
	cf := addConnFlags(fs)
	countOnly := fs.Bool("count", false, "print only the room's member and user counts")
	limit := fs.Int("limit", 0, "print one page of at most N members (1-1000) instead of all")
	cursor := fs.String("cursor", "", "with --limit: continue from this cursor (printed by the previous page)")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: arq presence [--count] [--limit N [--cursor C]] SUBJECT")
	}
	if *limit < 0 || *limit > 1000 {
		return errors.New("--limit must be 1-1000")
	}
	if *cursor != "" && *limit == 0 {
		return errors.New("--cursor needs --limit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var a *client.PresenceAnswer
	switch {
	case *countOnly:
		a, err = c.Presence(ctx, pos[0], client.PresenceOptions{CountOnly: true})
	case *limit > 0:
		a, err = c.Presence(ctx, pos[0], client.PresenceOptions{Limit: *limit, Cursor: *cursor})
	default:
		a, err = c.PresenceAll(ctx, pos[0])
	}
	if err != nil {
		return err
	}
	if *countOnly {
		fmt.Printf("members %d\nusers %d\n", a.Count, a.Users)
		return nil
	}
	printMembers(os.Stdout, a.Members)
	fmt.Fprintf(os.Stderr, "%s: %d members, %d users\n", pos[0], a.Count, a.Users)
	if a.Cursor != "" {
		fmt.Fprintf(os.Stderr, "more: --cursor %s\n", a.Cursor)
	}
	return nil
}

// printMembers writes one member per line: user, session, node, joined_at
// (RFC 3339, UTC, milliseconds) and info when there is one, tab-separated.
func printMembers(w io.Writer, ms []client.PresenceMember) {
	for _, m := range ms {
		fmt.Fprintln(w, formatMember(m, "\t"))
	}
}

const joinedAtLayout = "2006-01-02T15:04:05.000Z07:00"

func formatMember(m client.PresenceMember, sep string) string {
	f := []string{m.User, m.Session, m.Node, m.JoinedAt.UTC().Format(joinedAtLayout)}
	if m.JoinedAt.IsZero() {
		f[3] = "-"
	}
	if len(m.Info) > 0 {
		f = append(f, string(m.Info))
	}
	return strings.Join(f, sep)
}

// formatPresenceEvent is how "arq sub --presence" prints a join or leave:
//
//	SUBJECT join USER SESSION NODE JOINED_AT [INFO]
//	SUBJECT leave REASON USER SESSION NODE JOINED_AT [INFO]
func formatPresenceEvent(ev *client.PresenceEvent) string {
	head := ev.Subject + " " + ev.Type.String()
	if ev.Type == client.PresenceLeave {
		r := ev.Reason
		if r == "" {
			r = "-"
		}
		head += " " + r
	}
	return head + " " + formatMember(ev.Member, " ")
}
