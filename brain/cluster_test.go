package brain_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/brain"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/internal/spinetest"
	"github.com/arqonbus/arqonbus/internal/valkeytest"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/spine"
)

// These tests run the brain as it is deployed: real gateways on real
// sockets, a real NATS server, real brains on their own NATS connections,
// and a real Valkey-protocol server (or the memory store).

var testSecret = []byte("brain-cluster-test-secret-0123456789abcdef")

type node struct {
	gw  *gateway.Gateway
	sp  *spine.Spine
	url string
}

// startGateway starts a gateway node on NATS url with a fast heartbeat.
func startGateway(t testing.TB, url, id string, opts ...func(*gateway.Config)) *node {
	t.Helper()
	sp, err := spine.New(spine.Config{URL: url, NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{Listen: "127.0.0.1:0", NodeID: id, Verifier: v, Spine: sp,
		Presence: gateway.PresenceConfig{HeartbeatInterval: 250 * time.Millisecond, QueryTimeout: time.Second}}
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := gateway.New(cfg)
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
	n := &node{gw: gw, sp: sp, url: "ws://" + ln.Addr().String() + gateway.SocketPath}
	t.Cleanup(func() { n.stop() })
	return n
}

func (n *node) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = n.gw.Shutdown(ctx)
	n.sp.Close()
}

// startBrain starts a brain with store on its own NATS connection.
func startBrain(t testing.TB, url string, store brain.Store) *brain.Brain {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := brain.New(brain.Config{Conn: nc, Store: store, NodeTTL: 1500 * time.Millisecond, StoreRetry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(); nc.Close() })
	return b
}

func valkeyStore(t testing.TB, addr string) brain.Store {
	t.Helper()
	s, err := brain.NewValkeyStore(brain.ValkeyConfig{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dial connects a client of tenant as user.
func dial(t testing.TB, url, tenant, user string) *client.Client {
	t.Helper()
	tok, err := auth.Mint(testSecret, auth.MintOptions{Tenant: tenant, User: user, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: url, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func join(t testing.TB, c *client.Client, room string) *client.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.SubscribePresence(ctx, room, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nextEvent waits for s's next presence event of type typ, skipping
// others.
func nextEvent(t testing.TB, s *client.Subscription, typ client.PresenceEventType, timeout time.Duration) *client.PresenceEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-s.Presence:
			if ev.Type == typ {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event within %v", typ, timeout)
			return nil
		}
	}
}

// sessionsOf pages through a room and returns its sessions, sorted.
func sessionsOf(t testing.TB, c *client.Client, room string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := c.PresenceAll(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ms.Members))
	for i, m := range ms.Members {
		out[i] = m.Session
	}
	sort.Strings(out)
	return out
}

// waitSessions polls the room until it holds want (sorted), or fails.
func waitSessions(t testing.TB, c *client.Client, room string, want []string, timeout time.Duration) {
	t.Helper()
	want = append([]string(nil), want...)
	sort.Strings(want)
	deadline := time.Now().Add(timeout)
	var got []string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ms, err := c.PresenceAll(ctx, room)
		cancel()
		if err == nil {
			got = got[:0]
			for _, m := range ms.Members {
				got = append(got, m.Session)
			}
			sort.Strings(got)
			if fmt.Sprint(got) == fmt.Sprint(want) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("room %s: members %v, want %v", room, got, want)
}

// eventCounter counts the presence events the brains publish, per
// (leave, session).
type eventCounter struct {
	mu     sync.Mutex
	joins  map[string]int
	leaves map[string]int
	reason map[string]string
}

func countEvents(t testing.TB, url string) *eventCounter {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ec := &eventCounter{joins: map[string]int{}, leaves: map[string]int{}, reason: map[string]string{}}
	_, err = nc.Subscribe("arq.$presence.>", func(m *nats.Msg) {
		var ev pb.PresenceEvent
		if ev.UnmarshalVT(m.Data) != nil || ev.Member == nil {
			return
		}
		ec.mu.Lock()
		defer ec.mu.Unlock()
		if ev.Leave {
			ec.leaves[ev.Member.Session]++
			ec.reason[ev.Member.Session] = ev.Reason
		} else {
			ec.joins[ev.Member.Session]++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ec
}

func (ec *eventCounter) leavesOf(s string) (int, string) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	return ec.leaves[s], ec.reason[s]
}

func (ec *eventCounter) joinsOf(s string) int {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	return ec.joins[s]
}

// TestPresenceTwoNodes is User Story 4 on in-process nodes, for each
// store: a join on one node reaches a member on the other, the query lists
// both, a TCP reset and a gateway that stops heartbeating make members
// leave.
func TestPresenceTwoNodes(t *testing.T) {
	for _, kind := range []string{"memory", "valkey"} {
		t.Run(kind, func(t *testing.T) {
			url := spinetest.NATS(t)
			var store brain.Store
			if kind == "memory" {
				store = brain.NewMemoryStore()
			} else {
				store = valkeyStore(t, valkeytest.Start(t).Addr())
			}
			startBrain(t, url, store)
			na := startGateway(t, url, "node-a")
			nb := startGateway(t, url, "node-b")

			a := dial(t, na.url, "acme", "alice")
			ra := join(t, a, "room.1")
			self := nextEvent(t, ra, client.PresenceUpdate, 5*time.Second)
			if self.Member.Session != a.Welcome().SessionId || self.Member.User != "alice" || self.Member.Node != "node-a" {
				t.Fatalf("own join: %+v", self.Member)
			}

			bconn, bs := rawMember(t, nb.url, "acme", "bob", "room.1")
			ev := nextEvent(t, ra, client.PresenceUpdate, 5*time.Second)
			if ev.Member.User != "bob" || ev.Member.Node != "node-b" || ev.Subject != "room.1" || ev.Member.Session != bs {
				t.Fatalf("join seen by alice: %+v", ev)
			}
			waitSessions(t, a, "room.1", []string{a.Welcome().SessionId, bs}, 5*time.Second)

			// Another tenant's room of the same name is another room.
			o := dial(t, nb.url, "other", "olga")
			ro := join(t, o, "room.1")
			nextEvent(t, ro, client.PresenceUpdate, 5*time.Second)
			if got := sessionsOf(t, o, "room.1"); len(got) != 1 || got[0] != o.Welcome().SessionId {
				t.Fatalf("tenant other sees %v", got)
			}

			// TCP reset, no close frame.
			reset(bconn)
			ev = nextEvent(t, ra, client.PresenceLeave, 5*time.Second)
			if ev.Member.Session != bs || ev.Reason != "reset" {
				t.Fatalf("leave after reset: %+v reason %q", ev.Member, ev.Reason)
			}
			select {
			case ev := <-ro.Presence:
				t.Fatalf("tenant other saw %+v", ev)
			default:
			}

			// A node that goes silent: its members leave after the TTL.
			c := dial(t, nb.url, "acme", "carol")
			join(t, c, "room.1")
			nextEvent(t, ra, client.PresenceUpdate, 5*time.Second)
			cs := c.Welcome().SessionId
			silence(nb) // stops heartbeats without a goodbye
			ev = nextEvent(t, ra, client.PresenceLeave, 10*time.Second)
			if ev.Member.Session != cs || ev.Reason != "node_down" {
				t.Fatalf("leave after node death: %+v reason %q", ev.Member, ev.Reason)
			}
			waitSessions(t, a, "room.1", []string{a.Welcome().SessionId}, 5*time.Second)
		})
	}
}

// rawMember joins room over a WebSocket of its own (JSON codec) and
// returns the TCP connection and the session id, so that the test can
// reset it.
func rawMember(t testing.TB, url, tenant, user, room string) (*net.TCPConn, string) {
	t.Helper()
	tok, err := auth.Mint(testSecret, auth.MintOptions{Tenant: tenant, User: user, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}}),
		Protocols: []string{gateway.SubprotocolJSON}, Timeout: 5 * time.Second}
	conn, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// br holds what arrived with the upgrade response (the WELCOME).
	var rd io.Reader = conn
	if br != nil {
		rd = br
	}
	rw := struct {
		io.Reader
		io.Writer
	}{rd, conn}
	welcome, err := wsutil.ReadServerText(rw)
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		SessionID string `json:"session_id"`
	}
	if err := json.Unmarshal(welcome, &w); err != nil || w.SessionID == "" {
		t.Fatalf("welcome %s: %v", welcome, err)
	}
	if err := wsutil.WriteClientText(conn, []byte(`{"op":"sub","id":1,"subject":"`+room+`","presence":true}`)); err != nil {
		t.Fatal(err)
	}
	ack, err := wsutil.ReadServerText(rw)
	if err != nil || !strings.Contains(string(ack), `"ack"`) {
		t.Fatalf("sub answer %s: %v", ack, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn.(*net.TCPConn), w.SessionID
}

// reset closes tc with a TCP reset (SO_LINGER 0), without a WebSocket
// close.
func reset(tc *net.TCPConn) {
	_ = tc.SetLinger(0)
	_ = tc.Close()
}

// silence cuts a node off NATS abruptly, as if its process died: no more
// heartbeats, no leaves.
func silence(n *node) {
	n.sp.Conn().Close()
}

// TestPresenceTwoBrains: two brains on one Valkey apply every node stream;
// each join and leave is published exactly once, also when a node dies.
func TestPresenceTwoBrains(t *testing.T) {
	url := spinetest.NATS(t)
	addr := valkeytest.Start(t).Addr()
	startBrain(t, url, valkeyStore(t, addr))
	startBrain(t, url, valkeyStore(t, addr))
	ec := countEvents(t, url)
	na := startGateway(t, url, "node-a")
	nb := startGateway(t, url, "node-b")

	a := dial(t, na.url, "acme", "alice")
	ra := join(t, a, "room.1")
	var sessions []string
	var clients []*client.Client
	for i := range 20 {
		c := dial(t, nb.url, "acme", fmt.Sprintf("user-%d", i))
		join(t, c, "room.1")
		sessions = append(sessions, c.Welcome().SessionId)
		clients = append(clients, c)
	}
	waitSessions(t, a, "room.1", append(sessions, a.Welcome().SessionId), 5*time.Second)
	// Half leave by closing, half with their node.
	for _, c := range clients[:10] {
		_ = c.Close()
	}
	waitSessions(t, a, "room.1", append(sessions[10:], a.Welcome().SessionId), 5*time.Second)
	silence(nb)
	waitSessions(t, a, "room.1", []string{a.Welcome().SessionId}, 10*time.Second)
	time.Sleep(500 * time.Millisecond) // a duplicate would have arrived by now
	for i, s := range sessions {
		if n := ec.joinsOf(s); n != 1 {
			t.Errorf("member %d: %d joins published", i, n)
		}
		n, reason := ec.leavesOf(s)
		if n != 1 {
			t.Errorf("member %d: %d leaves published", i, n)
		}
		if want := map[bool]string{true: "close", false: "node_down"}[i < 10]; reason != want {
			t.Errorf("member %d left for %q, want %q", i, reason, want)
		}
	}
	_ = ra
}

// TestPresenceSurvivesRestarts: a brain restart loses nothing the store
// holds; a Valkey restart (which loses everything: no persistence) is
// repaired from the gateways' snapshots without restarting them; while
// Valkey is down, queries answer UNAVAILABLE and publishing still works.
func TestPresenceSurvivesRestarts(t *testing.T) {
	url := spinetest.NATS(t)
	vk := valkeytest.Start(t)
	store := valkeyStore(t, vk.Addr())
	b1nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer b1nc.Close()
	b1, err := brain.New(brain.Config{Conn: b1nc, Store: store, NodeTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	na := startGateway(t, url, "node-a")
	a := dial(t, na.url, "acme", "alice")
	b := dial(t, na.url, "acme", "bob")
	join(t, a, "room.1")
	join(t, b, "room.1")
	want := []string{a.Welcome().SessionId, b.Welcome().SessionId}
	waitSessions(t, a, "room.1", want, 5*time.Second)

	// Brain restart.
	b1.Close()
	startBrain(t, url, store)
	waitSessions(t, a, "room.1", want, 5*time.Second)

	// Valkey down: UNAVAILABLE, messages keep flowing.
	vk.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var se *client.ServerError
	for {
		_, err := a.Presence(ctx, "room.1", client.PresenceOptions{})
		if errors.As(err, &se) && errors.Is(err, client.ErrUnavailable) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("presence with Valkey down: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sub, err := b.Subscribe(ctx, "chat.x")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PublishAck(ctx, "chat.x", []byte("still here"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.C:
		if string(m.Data) != "still here" {
			t.Fatalf("got %q", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("no message while Valkey is down")
	}

	// Valkey back, empty: the gateway's snapshot restores the room.
	vk.Restart()
	restarted := time.Now()
	if n, err := vk.Do("DBSIZE"); err != nil || n != "0" {
		t.Fatalf("restarted Valkey holds %q keys (%v): the test needs an empty one", n, err)
	}
	waitSessions(t, a, "room.1", want, 15*time.Second)
	t.Logf("room restored %v after Valkey restarted", time.Since(restarted).Round(time.Millisecond))
}

// TestPresenceLargeRoomPaging: a 10k-member room (a real node stream,
// sent as a gateway sends it) pages through the gateway with every
// member exactly once.
func TestPresenceLargeRoomPaging(t *testing.T) {
	for _, kind := range []string{"memory", "valkey"} {
		t.Run(kind, func(t *testing.T) {
			url := spinetest.NATS(t)
			var store brain.Store
			if kind == "memory" {
				store = brain.NewMemoryStore()
			} else {
				store = valkeyStore(t, valkeytest.Start(t).Addr())
			}
			startBrain(t, url, store)
			na := startGateway(t, url, "node-a")
			// alice only asks: a member would receive 10k joins.
			a := dial(t, na.url, "acme", "alice")

			const members = 10000
			nc, err := nats.Connect(url)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			want := map[string]bool{}
			epoch := uint64(time.Now().UnixNano())
			seq := uint64(0)
			for i := 0; i < members; i += 500 {
				seq++
				bt := &pb.PresenceBatch{Node: "node-synthetic", Epoch: epoch, Seq: seq}
				for j := i; j < i+500; j++ {
					s := fmt.Sprintf("s%06d", j)
					want[s] = true
					bt.Ops = append(bt.Ops, &pb.PresenceOp{Tenant: "acme", Subject: "big", Session: s,
						User: fmt.Sprintf("u%d", j%777), JoinedAt: time.Now().UnixMilli()})
				}
				data, _ := bt.MarshalVT()
				if err := nc.Publish("arq.$brain.node.node-synthetic", data); err != nil {
					t.Fatal(err)
				}
			}
			// The synthetic node stays alive while the test pages.
			hb := &pb.PresenceBatch{Node: "node-synthetic", Epoch: epoch, Seq: seq, Heartbeat: true, Members: members}
			hbData, _ := hb.MarshalVT()
			stopHB := make(chan struct{})
			defer close(stopHB)
			go func() {
				for {
					_ = nc.Publish("arq.$brain.node.node-synthetic", hbData)
					select {
					case <-stopHB:
						return
					case <-time.After(250 * time.Millisecond):
					}
				}
			}()

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			last := 0
			for {
				ans, err := a.Presence(ctx, "big", client.PresenceOptions{CountOnly: true})
				if err != nil {
					t.Fatalf("count: %v (last count %d)", err, last)
				}
				last = ans.Count
				if ans.Count == members {
					if ans.Users != 777 {
						t.Fatalf("users %d, want %d", ans.Users, 777)
					}
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			seen := map[string]int{}
			cursor := ""
			pages := 0
			for {
				ans, err := a.Presence(ctx, "big", client.PresenceOptions{Limit: 1000, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(ans.Members) > 1000 {
					t.Fatalf("page of %d", len(ans.Members))
				}
				for _, m := range ans.Members {
					seen[m.Session]++
				}
				if ans.Cursor == "" {
					break
				}
				cursor = ans.Cursor
			}
			if len(seen) != len(want) {
				t.Fatalf("%d distinct members over %d pages, want %d", len(seen), pages, len(want))
			}
			for s, n := range seen {
				if n != 1 || !want[s] {
					t.Fatalf("member %s seen %d times (wanted: %v)", s, n, want[s])
				}
			}
		})
	}
}

// TestPresencePingTimeout: a member whose client stops answering (no
// pong, no frames, TCP still open) leaves when its idle deadline passes,
// with the reason ping_timeout.
func TestPresencePingTimeout(t *testing.T) {
	url := spinetest.NATS(t)
	startBrain(t, url, brain.NewMemoryStore())
	n := startGateway(t, url, "node-a", func(c *gateway.Config) {
		c.HeartbeatInterval = 200 * time.Millisecond
		c.IdleTimeout = 600 * time.Millisecond
		c.SweepInterval = 100 * time.Millisecond
	})
	a := dial(t, n.url, "acme", "alice") // the client answers pings
	ra := join(t, a, "room.1")
	nextEvent(t, ra, client.PresenceUpdate, 5*time.Second)
	mute, session := rawMember(t, n.url, "acme", "mute", "room.1") // never reads again
	defer mute.Close()
	for {
		ev := nextEvent(t, ra, client.PresenceLeave, 10*time.Second)
		if ev.Member.Session == session {
			if ev.Reason != "ping_timeout" {
				t.Fatalf("mute member left for %q", ev.Reason)
			}
			return
		}
		t.Fatalf("unexpected leave %+v (%s)", ev.Member, ev.Reason)
	}
}
