package main

import (
	"bufio"
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"syscall"
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

// TestPresenceCLI drives arq sub --presence and arq presence against arq
// serve (with its in-process brain).
func TestPresenceCLI(t *testing.T) {
	bin := buildArq(t)
	dir := t.TempDir()
	s := startServe(t, bin, dir)

	// ann joins with info and prints the room's events.
	ann := exec.Command(bin, "sub", "--presence", "--info", `{"name":"Ann"}`, "room.1", "--url", s.wsURL, "--user", "ann")
	ann.Dir = dir
	annOut, _ := ann.StdoutPipe()
	annErr, _ := ann.StderrPipe()
	if err := ann.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ann.Process.Kill(); _ = ann.Wait() }()
	if line, err := bufio.NewReader(annErr).ReadString('\n'); err != nil || !strings.HasPrefix(line, "joined room.1 (tenant dev, session ") {
		t.Fatalf("arq sub --presence: %q %v", line, err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(annOut)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(prefix string) []string {
		t.Helper()
		select {
		case l := <-lines:
			if !strings.HasPrefix(l, prefix) {
				t.Fatalf("arq sub printed %q, want %q...", l, prefix)
			}
			return strings.Split(l, " ")
		case <-time.After(10 * time.Second):
			t.Fatalf("arq sub printed no %q line", prefix)
		}
		return nil
	}
	own := next("room.1 join ann ")
	if len(own) != 7 || own[6] != `{"name":"Ann"}` {
		t.Fatalf("own join %q", own)
	}
	if _, err := time.Parse(time.RFC3339, own[5]); err != nil {
		t.Fatalf("joined_at %q: %v", own[5], err)
	}

	// bob joins (JSON codec) and leaves on SIGTERM: ann sees both.
	bob := exec.Command(bin, "sub", "--presence", "room.1", "--url", s.wsURL, "--user", "bob", "--json")
	bob.Dir = dir
	bobErr, _ := bob.StderrPipe()
	if err := bob.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(bobErr).ReadString('\n'); err != nil || !strings.HasPrefix(line, "joined room.1") {
		t.Fatalf("bob: %q %v", line, err)
	}
	next("room.1 join bob ")

	members := run(t, dir, bin, "presence", "room.1", "--url", s.wsURL)
	rows := strings.Split(strings.TrimSuffix(members, "\n"), "\n")
	if len(rows) != 2 {
		t.Fatalf("arq presence printed %q", members)
	}
	for _, r := range rows {
		f := strings.Split(r, "\t")
		switch {
		case len(f) == 5 && f[0] == "ann" && f[1] == own[3] && f[4] == `{"name":"Ann"}`:
		case len(f) == 4 && f[0] == "bob":
		default:
			t.Fatalf("member line %q", r)
		}
	}
	if got := run(t, dir, bin, "presence", "--count", "room.1", "--url", s.wsURL); got != "members 2\nusers 2\n" {
		t.Fatalf("arq presence --count printed %q", got)
	}
	if got := run(t, dir, bin, "presence", "--limit", "1", "room.1", "--url", s.wsURL); strings.Count(got, "\n") != 1 {
		t.Fatalf("arq presence --limit 1 printed %q", got)
	}

	_ = bob.Process.Signal(syscall.SIGTERM)
	_ = bob.Wait()
	next("room.1 leave close bob ")

	// A pattern is refused with the server's error and exit status 1.
	bad := exec.Command(bin, "presence", "room.*", "--url", s.wsURL)
	bad.Dir = dir
	out, err := bad.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "VALIDATION_ERROR: presence needs a literal subject") {
		t.Fatalf("arq presence 'room.*': %v %q", err, out)
	}
}
