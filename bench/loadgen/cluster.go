package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/spine"
)

// Cluster mode (-cluster N): instead of one server, the load generator
// starts a cluster on loopback and spreads its clients over the nodes
// (-scenario cluster: -node-subs subscribers per node, publishers on
// -pub-node).
//
//	-target arqon  -cluster-nats NATS server processes (this binary in its
//	               internal -serve-nats mode: a plain NATS listener, routes
//	               between them when more than one, the bus's accounts and
//	               users as deploy/nats/nats.conf defines them: account BUS
//	               with users "gateway" and "brain", a SYSTEM account), then
//	               N `arq serve` processes, each with [nats] url (node i on
//	               NATS server i mod -cluster-nats), user = "gateway" and
//	               password_file; a brain in process on node 0 only
//	               ([brain] enabled = false on the others), as one brain per
//	               bus would run. All nodes share one dev secret (they run in
//	               the same directory), so one token serves every node.
//	-target nats   N nats-server processes (the same internal mode), each
//	               with a WebSocket listener and routes to the others, no
//	               authentication (the NATS clients send a bare CONNECT).
//
// Every process gets -server-cpus (taskset) like a single server; the
// load generator stops them by PID at the end.

// clusterFlags are the cluster mode's command-line settings.
var clusterFlags struct {
	n        int    // -cluster: nodes (0: off)
	nats     int    // -cluster-nats: NATS servers behind ArqonBus nodes
	nodeSubs string // -node-subs: subscribers per node
	pubNode  int    // -pub-node: the node the publishers connect to
	interest string // -nats-interest: the gateways' [nats] interest ("": their default)
}

// natsNode holds the internal -serve-nats mode's cluster settings (set by
// the load generator when it starts a cluster node).
var natsNode natsNodeOpts

func init() {
	flag.IntVar(&clusterFlags.n, "cluster", 0, "start a cluster of this many nodes instead of one server (arqon: arq serve --nats processes over -cluster-nats NATS servers; nats: nats-server WebSocket listeners joined by routes); use with -scenario cluster")
	flag.IntVar(&clusterFlags.nats, "cluster-nats", 1, "-cluster with -target arqon: NATS server processes behind the gateways (routes between them when > 1)")
	flag.StringVar(&clusterFlags.nodeSubs, "node-subs", "", "cluster: subscribers per node, comma-separated, one entry per node (default: -conns on every node)")
	flag.IntVar(&clusterFlags.pubNode, "pub-node", 0, "cluster: node (0-based) the publishers connect to")
	flag.StringVar(&clusterFlags.interest, "nats-interest", "", "-cluster with -target arqon: the gateways' [nats] interest (subject | tenant; default: not set, arq's default)")
	flag.StringVar(&natsNode.Listen, "nats-listen", "", "internal (-serve-nats): NATS client listener host:port (default: a random loopback port)")
	flag.StringVar(&natsNode.Cluster, "nats-cluster", "", "internal (-serve-nats): route listener host:port")
	flag.StringVar(&natsNode.Routes, "nats-routes", "", "internal (-serve-nats): every cluster member's route address, comma-separated (its own is skipped)")
	flag.StringVar(&natsNode.Name, "nats-name", "", "internal (-serve-nats): server name")
	flag.StringVar(&natsNode.AuthDir, "nats-auth", "", "internal (-serve-nats): directory with nats-gateway.password and nats-brain.password: the bus accounts and users of deploy/nats/nats.conf")
}

// natsNodeOpts configures one nats-server of the internal -serve-nats mode.
type natsNodeOpts struct {
	Listen  string // client listener ("": random loopback port)
	Cluster string // route listener ("": no cluster)
	Routes  string // route addresses of every member, comma-separated
	Name    string
	AuthDir string // "": no authentication
}

// active reports whether the internal mode should run for these settings
// even without a WebSocket listener.
func (o natsNodeOpts) active() bool { return o.Listen != "" }

// Password files the internal NATS mode reads from -nats-auth.
const (
	natsGatewayPassFile = "nats-gateway.password"
	natsBrainPassFile   = "nats-brain.password"
)

// natsServerOptions builds the options of the internal mode's nats-server:
// a WebSocket listener on ws (if not ""), the client listener, the cluster
// and the bus's accounts. It returns how many other servers the routes
// name (the server is ready once it has that many remotes).
func natsServerOptions(ws string, o natsNodeOpts) (*server.Options, int, error) {
	opts := &server.Options{
		ServerName: o.Name,
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
	}
	if ws != "" {
		host, port, err := splitPort(ws)
		if err != nil {
			return nil, 0, fmt.Errorf("websocket address: %w", err)
		}
		opts.Websocket = server.WebsocketOpts{Host: host, Port: port, NoTLS: true}
	}
	if o.Listen != "" {
		host, port, err := splitPort(o.Listen)
		if err != nil {
			return nil, 0, fmt.Errorf("-nats-listen: %w", err)
		}
		opts.Host, opts.Port = host, port
	}
	remotes := 0
	if o.Cluster != "" {
		host, port, err := splitPort(o.Cluster)
		if err != nil {
			return nil, 0, fmt.Errorf("-nats-cluster: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: "loadgen", Host: host, Port: port, NoAdvertise: true}
		var routes []string
		for _, r := range strings.Split(o.Routes, ",") {
			if r = strings.TrimSpace(r); r == "" || r == o.Cluster {
				continue
			}
			if _, _, err := splitPort(r); err != nil {
				return nil, 0, fmt.Errorf("-nats-routes: %w", err)
			}
			routes = append(routes, "nats-route://"+r)
		}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		remotes = len(routes)
	}
	if o.AuthDir != "" {
		read := func(name string) (string, error) {
			b, err := os.ReadFile(filepath.Join(o.AuthDir, name))
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(string(b)), nil
		}
		gw, err := read(natsGatewayPassFile)
		if err != nil {
			return nil, 0, err
		}
		br, err := read(natsBrainPassFile)
		if err != nil {
			return nil, 0, err
		}
		// deploy/nats/nats.conf: account BUS with the gateway and brain
		// users and their permissions (prefix "arq"), a SYSTEM account.
		spine.BusAuth(opts, "arq", gw, br)
	}
	return opts, remotes, nil
}

// splitPort splits a loopback "host:port" with a port > 0.
func splitPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", 0, fmt.Errorf("%q is not a loopback address", addr)
	}
	return host, port, nil
}

// waitRemotes waits until s has routes to want other servers.
func waitRemotes(s *server.Server, want int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for s.NumRemotes() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("loadgen: %d of %d routes up after %v", s.NumRemotes(), want, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// natsReadyLine is what the internal mode prints once it is ready (its
// routes up); the load generator waits for it in the process's log.
const natsReadyLine = "loadgen-nats-ready"

// waitLog waits until file contains s.
func waitLog(file, s string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(file); err == nil && strings.Contains(string(b), s) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(file)
	return fmt.Errorf("loadgen: %s: no %q within %v: %.300s", file, s, d, b)
}

// parseNodeSubs parses -node-subs for nodes nodes ("" means def on each).
func parseNodeSubs(s string, nodes, def int) ([]int, error) {
	out := make([]int, 0, nodes)
	if strings.TrimSpace(s) == "" {
		for range nodes {
			out = append(out, def)
		}
		return out, nil
	}
	total := 0
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("loadgen: bad -node-subs entry %q", f)
		}
		out = append(out, n)
		total += n
	}
	if len(out) != nodes {
		return nil, fmt.Errorf("loadgen: -node-subs has %d entries for %d nodes", len(out), nodes)
	}
	if total == 0 {
		return nil, errors.New("loadgen: -node-subs has no subscriber")
	}
	return out, nil
}

// clusterProc is one process of a cluster the load generator started.
type clusterProc struct {
	Name string `json:"name"`
	Role string `json:"role"` // "gateway" or "nats"
	PID  int    `json:"pid"`
}

// clusterProcs lists the processes of the cluster spawnCluster started
// (for CPU per role).
var clusterProcs []clusterProc

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// spawnCluster starts the cluster of -cluster nodes for t's kind, fills
// t's URLs (node order), PIDs and metrics endpoints, and returns a
// function that stops what it started.
func spawnCluster(t *target, o spawnOpts, nodes, natsServers int) (func(), error) {
	dir, err := os.MkdirTemp(o.WorkDir, "loadgen-cluster-"+t.Kind+"-")
	if err != nil {
		return nil, err
	}
	var procs []*serverProc
	stop := func() {
		// Gateways first (they were started last), then NATS.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
		if os.Getenv("LOADGEN_KEEP") == "" {
			_ = os.RemoveAll(dir)
		}
	}
	fail := func(err error) (func(), error) {
		stop()
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	ports := func(n int) ([]string, error) {
		var out []string
		for range n {
			p, err := freePort()
			if err != nil {
				return nil, err
			}
			out = append(out, "127.0.0.1:"+strconv.Itoa(p))
		}
		return out, nil
	}
	// startNATS starts k internal nats-servers (with WebSocket listeners
	// on ws, if given) joined by routes; it returns their client addresses.
	startNATS := func(k int, ws []string, authDir string) ([]string, error) {
		clients, err := ports(k)
		if err != nil {
			return nil, err
		}
		routes, err := ports(k)
		if err != nil {
			return nil, err
		}
		var names []string
		for i := range k {
			name := fmt.Sprintf("nats-%d", i)
			args := []string{"-nats-listen", clients[i], "-nats-name", name}
			if ws != nil {
				args = append(args, "-serve-nats", ws[i])
			}
			if k > 1 {
				args = append(args, "-nats-cluster", routes[i], "-nats-routes", strings.Join(routes, ","))
			}
			if authDir != "" {
				args = append(args, "-nats-auth", authDir)
			}
			p, err := startProc(dir, name, self, args...)
			if err != nil {
				return nil, err
			}
			procs = append(procs, p)
			clusterProcs = append(clusterProcs, clusterProc{Name: name, Role: "nats", PID: p.cmd.Process.Pid})
			t.PIDs = append(t.PIDs, p.cmd.Process.Pid)
			names = append(names, name)
		}
		for _, name := range names {
			if err := waitLog(filepath.Join(dir, name+".log"), natsReadyLine, 30*time.Second); err != nil {
				return nil, err
			}
		}
		return clients, nil
	}
	clusterProcs = nil
	switch t.Kind {
	case kindNATS:
		ws, err := ports(nodes)
		if err != nil {
			return fail(err)
		}
		if _, err := startNATS(nodes, ws, ""); err != nil {
			return fail(err)
		}
		for _, a := range ws {
			t.URLs = append(t.URLs, "ws://"+a+"/")
		}
	case kindArqon:
		bin, err := filepath.Abs(o.ArqBin)
		if err != nil {
			return fail(err)
		}
		for _, f := range []string{natsGatewayPassFile, natsBrainPassFile} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(randomHex(24)+"\n"), 0o600); err != nil {
				return fail(err)
			}
		}
		natsAddrs, err := startNATS(max(natsServers, 1), nil, dir)
		if err != nil {
			return fail(err)
		}
		for i := range nodes {
			cfg := fmt.Sprintf("[limits]\npublish_rate = -1\n\n[nats]\nurl = %q\nuser = \"gateway\"\npassword_file = %q\n",
				"nats://"+natsAddrs[i%len(natsAddrs)], filepath.Join(dir, natsGatewayPassFile))
			if clusterFlags.interest != "" {
				cfg += fmt.Sprintf("interest = %q\n", clusterFlags.interest)
			}
			if i > 0 {
				cfg += "\n[brain]\nenabled = false\n"
			}
			cfgFile := filepath.Join(dir, fmt.Sprintf("gw-%d.toml", i))
			if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
				return fail(err)
			}
			lp, err := ports(2)
			if err != nil {
				return fail(err)
			}
			name := fmt.Sprintf("gw-%d", i)
			p, err := startProc(dir, name, bin, "serve", "--listen", lp[0], "--admin", lp[1], "--config", cfgFile, "--node-id", name)
			if err != nil {
				return fail(err)
			}
			procs = append(procs, p)
			// One at a time: the first creates the dev secret the others read.
			if err := waitHTTP("http://"+lp[1]+"/readyz", 30*time.Second); err != nil {
				return fail(err)
			}
			clusterProcs = append(clusterProcs, clusterProc{Name: name, Role: "gateway", PID: p.cmd.Process.Pid})
			t.PIDs = append(t.PIDs, p.cmd.Process.Pid)
			t.MetricsURLs = append(t.MetricsURLs, "http://"+lp[1]+"/metrics")
			t.URLs = append(t.URLs, "ws://"+lp[0]+"/v1/socket")
		}
		secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
		if err != nil {
			return fail(err)
		}
		tok, err := auth.Mint(secret, auth.MintOptions{Tenant: o.Tenant, User: "loadgen", TTL: 4 * time.Hour})
		if err != nil {
			return fail(err)
		}
		for i := range t.URLs {
			t.URLs[i] += "?token=" + url.QueryEscape(tok)
		}
	default:
		return fail(fmt.Errorf("loadgen: -cluster supports -target arqon and nats, not %q", t.Kind))
	}
	fmt.Printf("loadgen: cluster of %d %s nodes started in %s: %v\n", nodes, t.Kind, dir, clusterProcs)
	return stop, nil
}
