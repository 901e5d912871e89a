package gateway

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/arqonbus/arqonbus/client"
)

// runNATS starts a NATS server on loopback at port (0: any free port) and
// returns it.
func runNATS(t *testing.T, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	return ns
}

// NATS going away and coming back (SPEC, "Load and faults"): both nodes
// report not ready, a node keeps serving its local subscribers meanwhile,
// and once NATS is back both are ready again and messages cross between
// them, with no duplicate.
func TestNATSOutage(t *testing.T) {
	ns := runNATS(t, 0)
	port := natsPort(t, ns)
	defer func() { ns.Shutdown() }()
	n1, n2 := startClusterNode(t, ns.ClientURL(), "node-1"), startClusterNode(t, ns.ClientURL(), "node-2")
	pub := dial(t, n1, "t1", "pub", client.Protobuf)
	local := dial(t, n1, "t1", "local", client.JSON)
	remote := dial(t, n2, "t1", "remote", client.JSON)
	sl, err := local.Subscribe(ctx(t), "news.>")
	if err != nil {
		t.Fatal(err)
	}
	sr, err := remote.Subscribe(ctx(t), "news.>")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(subject string) {
		t.Helper()
		if err := pub.PublishAck(ctx(t), subject, []byte(subject), client.PublishOptions{Text: true}); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	publish("news.before")
	if m := recv(t, sl); m.Subject != "news.before" {
		t.Fatalf("local got %s", m.Subject)
	}
	if m := recv(t, sr); m.Subject != "news.before" {
		t.Fatalf("remote got %s", m.Subject)
	}

	ns.Shutdown()
	waitFor(t, func() bool { return !n1.gw.Ready() && !n2.gw.Ready() })
	publish("news.during") // node 1's own subscriber still gets it
	if m := recv(t, sl); m.Subject != "news.during" {
		t.Fatalf("local got %s during the outage", m.Subject)
	}

	ns = runNATS(t, port)
	waitFor(t, func() bool { return n1.gw.Ready() && n2.gw.Ready() })
	// Node 2's subscription is replayed to the new server asynchronously to
	// node 1's publishes: publish until one crosses.
	seen := map[string]bool{}
	crossed := false
	for k := 0; k < 100 && !crossed; k++ {
		publish("news.after." + strconv.Itoa(k))
		if m := recv(t, sl); m.Subject != "news.after."+strconv.Itoa(k) {
			t.Fatalf("local got %s after the outage", m.Subject)
		}
	drain:
		for {
			select {
			case m := <-sr.C:
				if seen[m.Subject] {
					t.Fatalf("remote got %s twice", m.Subject)
				}
				seen[m.Subject] = true
				if m.Subject != "news.during" && !strings.HasPrefix(m.Subject, "news.after.") {
					t.Fatalf("remote got %s", m.Subject)
				}
				crossed = crossed || strings.HasPrefix(m.Subject, "news.after.")
			case <-time.After(50 * time.Millisecond):
				break drain
			}
		}
	}
	if !crossed {
		t.Fatal("no message crossed from node 1 to node 2 after NATS came back")
	}
}

// natsPort returns the client port of a running NATS server.
func natsPort(t *testing.T, ns *server.Server) int {
	t.Helper()
	u := ns.ClientURL()
	p, err := strconv.Atoi(u[strings.LastIndexByte(u, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}
