// Command spinecost measures what interest by subject costs NATS and the
// gateway nodes: N spine nodes (the gateway's NATS side, without
// WebSockets) subscribe to R distinct rooms between them, on a nats-server
// running in a child process; it reports the NATS server's subscriptions
// and resident memory, the nodes' heap, how long the subscriptions took,
// how long a node joining late takes to learn every pattern, and what the
// per-publish interest check costs with that many remote patterns.
//
//	go run ./bench/spinecost -rooms 100000 -nodes 4 -mode subject
//	go run ./bench/spinecost -rooms 100000 -nodes 4 -mode tenant
//
// Everything runs on loopback and stops by itself.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/spine"
)

func main() {
	rooms := flag.Int("rooms", 100000, "distinct rooms over all nodes")
	nodes := flag.Int("nodes", 4, "spine nodes")
	tenants := flag.Int("tenants", 10, "tenants the rooms are spread over")
	mode := flag.String("mode", spine.InterestSubject, "interest mode: subject or tenant")
	workers := flag.Int("workers", 64, "concurrent subscribers per node")
	serve := flag.String("serve", "", "internal: run nats-server on this address (monitoring on port+1)")
	flag.Parse()
	if *serve != "" {
		serveNATS(*serve)
		return
	}
	if err := run(*rooms, *nodes, *tenants, *workers, *mode); err != nil {
		fmt.Fprintln(os.Stderr, "spinecost:", err)
		os.Exit(1)
	}
}

// serveNATS runs a plain nats-server (no auth: a benchmark on loopback)
// until stdin closes.
func serveNATS(addr string) {
	host, ps, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(ps)
	ns, err := server.NewServer(&server.Options{Host: host, Port: port, HTTPHost: host, HTTPPort: port + 1, NoSigs: true, NoLog: true, MaxPayload: 8 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		os.Exit(1)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	ns.Shutdown()
}

func freePort() int {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1)); err == nil {
			l2.Close()
			return p
		}
	}
}

type varz struct {
	Subscriptions uint32 `json:"subscriptions"`
	Mem           int64  `json:"mem"`
}

func readVarz(port int) (varz, error) {
	var v varz
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port+1) + "/varz")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func run(rooms, nodes, tenants, workers int, mode string) error {
	port := freePort()
	child := exec.Command(os.Args[0], "-serve", "127.0.0.1:"+strconv.Itoa(port))
	stdin, _ := child.StdinPipe()
	out, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { stdin.Close(); _ = child.Wait() }()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "ready\n" {
		return fmt.Errorf("nats-server child did not start: %v", err)
	}
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	v0, err := readVarz(port)
	if err != nil {
		return err
	}
	h0 := heapInUse()

	fmt.Printf("spinecost: %d rooms over %d nodes, %d tenants, interest %s; nproc %d, %s\n",
		rooms, nodes, tenants, mode, runtime.NumCPU(), runtime.Version())
	cfg := func(id string) spine.Config {
		return spine.Config{URL: url, NodeID: id, Interest: mode, HeartbeatInterval: 250 * time.Millisecond, AckTimeout: 5 * time.Second}
	}
	var sps []*spine.Spine
	for i := range nodes {
		s, err := spine.New(cfg("node-" + strconv.Itoa(i)))
		if err != nil {
			return err
		}
		defer s.Close()
		s.SetHandler(func(*pb.Envelope) {})
		sps = append(sps, s)
	}
	time.Sleep(time.Second) // warm-up: every node knows the others
	h1 := heapInUse()

	room := func(i int) (string, string) { return "t" + strconv.Itoa(i%tenants), "room." + strconv.Itoa(i) }
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, nodes*workers)
	for n, s := range sps {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := n + w*nodes; i < rooms; i += nodes * workers {
					t, r := room(i)
					if err := s.Watch(t, r); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		return err
	}
	// Wait until every node knows every other node's patterns.
	// Entries every node should learn: the others' patterns (one ">" per
	// tenant and node in tenant mode).
	perNode := make([]int, nodes)
	for n := range nodes {
		seen := map[string]bool{}
		for i := n; i < rooms; i += nodes {
			t, r := room(i)
			if mode == spine.InterestTenant {
				r = ">"
			}
			seen[t+" "+r] = true
		}
		perNode[n] = len(seen)
	}
	total := 0
	for _, k := range perNode {
		total += k
	}

	deadline := time.Now().Add(60 * time.Second)
	for n, s := range sps {
		for s.Interest().Entries < total-perNode[n] && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	v1, err := readVarz(port)
	if err != nil {
		return err
	}
	h2 := heapInUse()
	subs := 0
	for _, s := range sps {
		subs += s.Subscriptions()
	}
	var timeouts, syncs uint64
	for _, s := range sps {
		timeouts += s.Interest().AckTimeouts
		syncs += s.Interest().Syncs
	}
	fmt.Printf("subscribe: %d Watch calls in %v (%.0f/s, %d concurrent per node); %d NATS subscriptions of the nodes; %d acknowledgement timeouts, %d snapshots asked\n",
		rooms, took.Round(time.Millisecond), float64(rooms)/took.Seconds(), workers, subs, timeouts, syncs)
	fmt.Printf("nats-server: subscriptions %d (+%d), RSS %.1f MiB (+%.1f MiB, %.0f B per room)\n",
		v1.Subscriptions, int(v1.Subscriptions)-int(v0.Subscriptions), float64(v1.Mem)/(1<<20), float64(v1.Mem-v0.Mem)/(1<<20),
		float64(v1.Mem-v0.Mem)/float64(rooms))
	var entries []string
	for _, s := range sps {
		entries = append(entries, strconv.Itoa(s.Interest().Entries))
	}
	fmt.Printf("nodes: heap in use +%.1f MiB for %d nodes with their subscriptions and interest tables (%.0f B per room; %.0f B at start); remote patterns known per node: %s\n",
		float64(h2-h1)/(1<<20), nodes, float64(h2-h1)/float64(rooms), float64(h1-h0), strings.Join(entries, " "))

	// A node joining late: how long until it knows every pattern.
	lateStart := time.Now()
	late, err := spine.New(cfg("late"))
	if err != nil {
		return err
	}
	defer late.Close()
	wantLate := total
	for (late.Interest().Entries < wantLate || !late.Interest().Open) && time.Since(lateStart) < 60*time.Second {
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("late node: knows %d patterns and skips after %v (warm-up 1.5 x 250 ms heartbeat included)\n",
		late.Interest().Entries, time.Since(lateStart).Round(time.Millisecond))

	// The per-publish check with that many remote patterns: a subject
	// nobody listens to (skipped) and one a node listens to (sent).
	for _, subj := range []string{"lobby.none", "room.7"} {
		env := &pb.Envelope{Tenant: "t7", Subject: subj, Payload: make([]byte, 64)}
		const n = 200000
		t0 := time.Now()
		for range n {
			_ = late.Publish(env)
		}
		fmt.Printf("publish %-10s with %d remote patterns: %.0f ns per publish (unheard %d, published %d)\n",
			subj, late.Interest().Entries, float64(time.Since(t0).Nanoseconds())/n, late.Stats.Unheard.Load(), late.Stats.Published.Load())
	}
	return nil
}
