package spinetest

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nuid"

	"github.com/arqonbus/arqonbus/spine"
)

// Cluster is a NATS cluster for tests: n nats-servers in this process,
// each listening for clients on a free loopback port and joined to every
// other over its cluster port on 127.0.0.1 (every server lists every
// route, as deploy/nats/nats.conf does; a server ignores the route to
// itself).
//
// Every server has the bus's accounts, users and permissions, as
// deploy/nats/nats.conf and the spine's protected embedded server
// (spine.Config.EmbeddedListen) define them, for the default prefix "arq":
// account BUS with the users "gateway" (publish and subscribe under
// "arq.>" and "_INBOX.>") and "brain" (only "arq.$brain.>",
// "arq.$presence.>" and "_INBOX.>"), and a separate system account SYSTEM.
// Like nats.conf, the servers do not advertise their client URLs
// (no_advertise): a client knows only the URLs it was given.
//
// NewCluster returns once every server is ready for clients and every
// route (every pooled route connection) is up. Kill stops one server; the
// rest are stopped when the test ends.
type Cluster struct {
	servers   []*server.Server
	perRemote []int // route connections server i holds to each other server
	gwPass    string
	brainPss  string

	mu     sync.Mutex
	killed []bool
}

// ClusterName is the cluster name of every Cluster's servers.
const ClusterName = "arqonbus-test"

// NewCluster starts a cluster of n servers (n >= 1) and stops it when tb
// ends. Server i is named "arq-test-<i>" (server.Server.Name).
func NewCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("spinetest: a cluster of %d servers", n)
	}
	c := &Cluster{gwPass: nuid.Next(), brainPss: nuid.Next(), killed: make([]bool, n)}
	// The cluster ports are chosen before any server starts (every server
	// lists every route), so another process may take one in between:
	// then the servers are stopped and started again on other ports.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if c.servers, c.perRemote, err = c.start(n); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("spinetest: NATS cluster: %v", err)
	}
	tb.Cleanup(func() {
		for i := range c.servers {
			c.Kill(i)
		}
	})
	if err := c.waitRoutes(10 * time.Second); err != nil {
		tb.Fatalf("spinetest: NATS cluster: %v", err)
	}
	return c
}

// start starts n clustered servers, or none (and an error), and returns
// them with the number of route connections each holds per remote server.
func (c *Cluster) start(n int) ([]*server.Server, []int, error) {
	ports, err := freePorts(n)
	if err != nil {
		return nil, nil, err
	}
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	servers := make([]*server.Server, 0, n)
	perRemote := make([]int, 0, n)
	stop := func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	}
	for i := range n {
		opts := c.options(i, ports[i], strings.Join(routes, ","))
		s, err := server.NewServer(opts)
		if err != nil {
			stop()
			return nil, nil, err
		}
		servers = append(servers, s)
		// NewServer has set the defaults in opts: the route pool's size
		// (-1: no pool, one connection) and the pinned accounts (the
		// system account), each with a connection of its own.
		per := 1
		if opts.Cluster.PoolSize > 0 {
			per = opts.Cluster.PoolSize + len(opts.Cluster.PinnedAccounts)
		}
		perRemote = append(perRemote, per)
		s.Start()
		// Not ready also when its cluster port was taken meanwhile.
		if !s.ReadyForConnections(10 * time.Second) {
			stop()
			return nil, nil, fmt.Errorf("server %d did not start (cluster port %d)", i, ports[i])
		}
	}
	return servers, perRemote, nil
}

// options returns the options of server i, whose cluster port is port.
func (c *Cluster) options(i, port int, routes string) *server.Options {
	opts := &server.Options{
		ServerName: fmt.Sprintf("arq-test-%d", i),
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20, // as the spine's embedded server
		Cluster: server.ClusterOpts{
			Name:        ClusterName,
			Host:        "127.0.0.1",
			Port:        port,
			NoAdvertise: true,
		},
		Routes: server.RoutesFromStr(routes),
	}
	spine.BusAuth(opts, "arq", c.gwPass, c.brainPss)
	return opts
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 (free when it
// returns; nothing holds them).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitRoutes waits until every running server has a route to every other
// running server, with all of its pooled connections (the pool and the
// pinned system account's connection).
func (c *Cluster) waitRoutes(timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; {
		up, msg := c.routesUp()
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("routes not up: " + msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// routesUp reports whether the routes between running servers are
// complete, and if not, which server lacks some.
func (c *Cluster) routesUp() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	alive := 0
	for _, k := range c.killed {
		if !k {
			alive++
		}
	}
	for i, s := range c.servers {
		if c.killed[i] {
			continue
		}
		if got, want := s.NumRemotes(), alive-1; got != want {
			return false, fmt.Sprintf("server %d has %d remotes, want %d", i, got, want)
		}
		if got, want := s.NumRoutes(), (alive-1)*c.perRemote[i]; got != want {
			return false, fmt.Sprintf("server %d has %d route connections, want %d", i, got, want)
		}
	}
	return true, ""
}

// WaitRoutes waits until the running servers' routes are complete again
// (after a Kill: until no survivor counts a route to the killed server).
func (c *Cluster) WaitRoutes(tb testing.TB) {
	tb.Helper()
	if err := c.waitRoutes(10 * time.Second); err != nil {
		tb.Fatalf("spinetest: NATS cluster: %v", err)
	}
}

// Size returns the number of servers (killed ones included).
func (c *Cluster) Size() int { return len(c.servers) }

// Server returns server i (0 <= i < Size()).
func (c *Cluster) Server(i int) *server.Server { return c.servers[i] }

// URL returns server i's client URL with the gateway user's credentials
// in it: a spine.Config URL that connects to that server only.
func (c *Cluster) URL(i int) string { return c.urlWith(i, spine.GatewayUser, c.gwPass) }

// BrainURL returns server i's client URL with the brain user's credentials.
func (c *Cluster) BrainURL(i int) string { return c.urlWith(i, spine.BrainUser, c.brainPss) }

// URLs returns every server's URL (as URL), server first first, separated
// by commas: a spine.Config URL that can fail over to every server. The
// NATS client shuffles the list unless told not to, so first is a
// preference the connection may not follow.
func (c *Cluster) URLs(first int) string {
	urls := []string{c.URL(first)}
	for i := range c.servers {
		if i != first {
			urls = append(urls, c.URL(i))
		}
	}
	return strings.Join(urls, ",")
}

func (c *Cluster) urlWith(i int, user, password string) string {
	return strings.Replace(c.servers[i].ClientURL(), "nats://", "nats://"+user+":"+password+"@", 1)
}

// Index returns the index of the server whose id (server.Server.ID, what
// a NATS client reports as its ConnectedServerId) is id, or -1.
func (c *Cluster) Index(id string) int {
	for i, s := range c.servers {
		if s.ID() == id {
			return i
		}
	}
	return -1
}

// Kill stops server i (server.Server.Shutdown) as a crashed process looks
// to its clients and routes: their connections close at once and nothing
// is handed over (not lame-duck mode, which would move clients first). A
// host that vanishes without closing its sockets is not simulated (clients
// would notice only by their pings). Kill returns once the server has
// stopped; killing a stopped server does nothing. The client URL of a
// killed server stays what it was (connections to it fail).
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	if c.killed[i] {
		c.mu.Unlock()
		return
	}
	c.killed[i] = true
	c.mu.Unlock()
	c.servers[i].Shutdown()
	c.servers[i].WaitForShutdown()
}
