// Command loadgen is ArqonBus's load generator. It drives a gateway (or,
// for comparison, nats-server's WebSocket listener or the bare netpoll
// server in ./bareserver) with many loopback WebSocket connections and
// reports handshake and end-to-end latency percentiles, delivery rates,
// and the server's memory per connection.
//
//	go run ./bench/loadgen -scenario connect -conns 5000 -rate 2000
//	go run ./bench/loadgen -scenario idle -sizes 1000,5000,10000,18000
//	go run ./bench/loadgen -scenario fanout -conns 1000 -rate 200 -duration 20s -target nats
//
// Scenarios: connect, idle, fanout, paced, pubsub, storm, slow, soak, presence (see the
// scenario_*.go files). By default the load generator starts the server
// itself (-target arqon runs -arq-bin; -target nats re-executes this binary
// with -serve-nats; -target bare builds and runs ./bareserver) in a
// temporary directory and stops it at the end; -url and -pids point it at
// a server started elsewhere. Every run is bounded by -duration and
// -max-conns; results go to -out as JSON and a summary to stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// config holds the command line.
type config struct {
	Scenario    string        `json:"scenario"`
	Target      string        `json:"target"`
	Codec       string        `json:"codec"`
	URL         string        `json:"url,omitempty"`
	Conns       int           `json:"conns"`
	Rate        float64       `json:"rate"`
	ConnRate    float64       `json:"conn_rate"`
	Concurrency int           `json:"concurrency"`
	Duration    time.Duration `json:"duration_ns"`
	MaxConns    int           `json:"max_conns"`
	Sizes       []int         `json:"sizes,omitempty"`
	Settle      time.Duration `json:"settle_ns"`
	Payload     int           `json:"payload_bytes"`
	Pairs       int           `json:"pairs"`
	Window      int           `json:"window"`
	Slow        int           `json:"slow"`
	ChurnRate   float64       `json:"churn_rate"`
	Reconnect   int           `json:"reconnect"`
	Hold        time.Duration `json:"hold_ns"`
	Idle        int           `json:"idle"`
	Timeout     time.Duration `json:"timeout_ns"`
	Recv        string        `json:"recv"`
	Loops       int           `json:"loops"`
	RBuf        int           `json:"rbuf_bytes"`
	Sample      int           `json:"sample"`
	Batch       int           `json:"batch"`
	Pipeline    bool          `json:"pipeline"`
	Pubs        int           `json:"pubs"`
	StepsArg    string        `json:"steps"`
	Step        time.Duration `json:"step_ns"`
	ServerCPUs  string        `json:"server_cpus,omitempty"`
	Progress    time.Duration `json:"-"`
	Out         string        `json:"-"`
}

func main() {
	var (
		cfg       config
		srcs      string
		pids      string
		metrics   string
		sizes     string
		token     string
		spawn     spawnOpts
		serveNats string
		bare      bool
	)
	flag.StringVar(&cfg.Scenario, "scenario", "connect", "connect | idle | fanout | paced | cluster | pubsub | storm | slow | soak | presence")
	flag.StringVar(&cfg.Target, "target", kindArqon, "arqon | nats | bare")
	flag.StringVar(&cfg.Codec, "codec", "json", "ArqonBus codec: json | proto")
	flag.StringVar(&cfg.URL, "url", "", "WebSocket URL(s), comma-separated, of a server started elsewhere (default: start one)")
	flag.StringVar(&token, "token", "", "JWT for -url (ArqonBus), sent as ?token=")
	flag.StringVar(&pids, "pids", "", "PIDs of the server processes behind -url, for RSS and CPU")
	flag.StringVar(&metrics, "metrics", "", "Prometheus /metrics URL(s) of the server behind -url")
	flag.StringVar(&srcs, "src", "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5", "client source addresses (loopback), used round-robin")
	flag.IntVar(&cfg.Conns, "conns", 1000, "connections (connect), subscribers (fanout, slow), simultaneous reconnects (storm)")
	flag.Float64Var(&cfg.Rate, "rate", 1000, "publish rate, messages/s in total (0: as fast as possible)")
	flag.Float64Var(&cfg.ConnRate, "conn-rate", 2000, "new connections per second while ramping (0: unpaced)")
	flag.IntVar(&cfg.Concurrency, "concurrency", 128, "handshakes in flight while ramping")
	flag.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish / hold / churn")
	flag.IntVar(&cfg.MaxConns, "max-conns", 19000, "upper bound on connections open at once")
	flag.StringVar(&sizes, "sizes", "1000,5000,10000,18000", "idle: connection counts to measure at")
	flag.DurationVar(&cfg.Settle, "settle", 3*time.Second, "idle: wait after each ramp before reading RSS")
	flag.IntVar(&cfg.Payload, "payload", 64, "payload bytes (at least 30: send timestamp and sequence number)")
	flag.IntVar(&cfg.Window, "window", 0, "fanout/pubsub: closed loop, publish only while at most this many messages per subscriber are in flight, i.e. sent*subscribers - delivered <= window*subscribers (0: open loop at -rate)")
	flag.IntVar(&cfg.Pairs, "pairs", 100, "pubsub/soak: publisher-subscriber pairs")
	flag.IntVar(&cfg.Slow, "slow", 50, "slow: subscribers that stop reading")
	flag.Float64Var(&cfg.ChurnRate, "churn-rate", 200, "storm/soak: connect-subscribe-close cycles per second")
	flag.IntVar(&cfg.Reconnect, "reconnect", 5000, "storm: connections dropped and reconnected at once")
	flag.DurationVar(&cfg.Hold, "hold", 200*time.Millisecond, "storm/soak: how long a churning connection stays open")
	flag.IntVar(&cfg.Idle, "idle", 2000, "soak: idle subscribed connections")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "handshake and subscribe timeout")
	flag.DurationVar(&cfg.Progress, "progress", 5*time.Second, "progress line interval")
	flag.StringVar(&cfg.Recv, "recv", "epoll", "connect/fanout/pubsub/storm client path: epoll (lean event loops on raw sockets) | goroutine (a goroutine per subscriber, in-place parsing) | legacy (goroutine + 1 KiB bufio per connection)")
	flag.IntVar(&cfg.Loops, "loops", 2, "epoll: event loops (each an epoll instance and a goroutine)")
	flag.IntVar(&cfg.RBuf, "rbuf", 64<<10, "epoll/goroutine: read buffer bytes (per loop; per connection with -recv goroutine)")
	flag.IntVar(&cfg.Sample, "sample", 0, "epoll/goroutine: record end-to-end latency for 1 message number in N, at every subscriber (0: 1 if -rate x subscribers <= 200k/s, else 16)")
	flag.BoolVar(&cfg.Pipeline, "pipeline", false, "connect (epoll): send the SUB (NATS: CONNECT+PING and SUB+PING) in the same write as the upgrade request instead of after the greeting; arqon and bare only: nats-server closes such connections)")
	flag.IntVar(&cfg.Batch, "batch", 64, "publisher: at most this many messages per write (what is due is written at once)")
	flag.StringVar(&cfg.Out, "out", "", "write JSON results to this file")
	flag.StringVar(&spawn.ArqBin, "arq-bin", ".bin/arq", "arq binary to start (-target arqon without -url)")
	flag.StringVar(&spawn.ArqConfig, "arq-config", "", "arq serve --config file (default: one with [limits] publish_rate = -1)")
	flag.StringVar(&spawn.BareBin, "bare-bin", "", "bareserver binary (default: go build it)")
	flag.IntVar(&spawn.Hosts, "hosts", 1, "ArqonBus processes sharing the port with SO_REUSEPORT")
	flag.StringVar(&spawn.Tenant, "tenant", "bench", "ArqonBus tenant of the minted token")
	flag.BoolVar(&bare, "bare", false, "idle: afterwards measure the bare netpoll server (./bareserver) at the same sizes, for the event loop's floor")
	flag.StringVar(&serveNats, "serve-nats", "", "internal: run nats-server with a WebSocket listener on this address")
	flag.StringVar(&serverCPUs, "server-cpus", "", "pin the servers the load generator starts to these CPUs (taskset -c list, e.g. 0); pin the load generator itself with taskset -c 1")
	flag.IntVar(&cfg.Pubs, "pubs", 1, "paced: publishers, each sending one message per frame and per write")
	flag.StringVar(&cfg.StepsArg, "steps", "200,500,1000,2000", "paced: publish rates, messages/s in total, one step each, in order; a step is sustained when >= 95% of its deliveries arrive within it (the run stops after the first that is not)")
	flag.DurationVar(&cfg.Step, "step", 5*time.Second, "paced: how long each step publishes")
	cpuProfile := flag.String("cpuprofile", "", "write the load generator's CPU profile to this file")
	gogc := flag.Int("gogc", 400, "GOGC of the load generator (fewer GC pauses in its latency figures)")
	flag.Parse()
	debug.SetGCPercent(*gogc)
	cfg.ServerCPUs = serverCPUs
	maxPubBatch = cfg.Batch

	raiseNoFile()
	if serveNats != "" || natsNode.active() {
		if err := serveNATS(serveNats); err != nil {
			fmt.Fprintln(os.Stderr, "serve-nats:", err)
			os.Exit(1)
		}
		return
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(&cfg, srcs, pids, metrics, sizes, token, spawn, bare); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// raiseNoFile lifts the open-file soft limit to the hard limit.
func raiseNoFile() {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
	}
}

// scenarioFunc runs one scenario and returns its results.
type scenarioFunc func(ctx context.Context, cfg *config, t *target) (map[string]any, error)

var scenarios = map[string]scenarioFunc{
	"connect": runConnect,
	"idle":    runIdle,
	"fanout":  runFanout,
	"pubsub":  runPubsub,
	"storm":   runStorm,
	"slow":    runSlow,
	"soak":    runSoak,
	"paced":   runPaced,
	// cluster: scenario_cluster.go (its flags are registered in cluster.go).
	"cluster": runCluster,
	// presence: scenario_presence.go (its flags are registered there).
	"presence": runPresence,
}

func run(cfg *config, srcs, pids, metrics, sizes, token string, spawn spawnOpts, bare bool) error {
	fn := scenarios[cfg.Scenario]
	if fn == nil {
		return fmt.Errorf("unknown scenario %q", cfg.Scenario)
	}
	for _, f := range strings.Split(sizes, ",") {
		if f = strings.TrimSpace(f); f != "" {
			n, err := strconv.Atoi(f)
			if err != nil || n <= 0 {
				return fmt.Errorf("bad -sizes entry %q", f)
			}
			cfg.Sizes = append(cfg.Sizes, n)
		}
	}
	t := &target{Kind: cfg.Target, Proto: cfg.Codec == "proto", Timeout: cfg.Timeout}
	for _, s := range strings.Split(srcs, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("-src %q is not a loopback address", s)
		}
		t.SrcIPs = append(t.SrcIPs, ip)
	}
	if cfg.URL != "" {
		for _, u := range strings.Split(cfg.URL, ",") {
			pu, err := url.Parse(u)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(pu.Hostname()); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("-url %q: only loopback targets are allowed", u)
			}
			if token != "" && !strings.Contains(u, "token=") {
				sep := "?"
				if strings.Contains(u, "?") {
					sep = "&"
				}
				u += sep + "token=" + url.QueryEscape(token)
			}
			t.URLs = append(t.URLs, u)
		}
		var err error
		if t.PIDs, err = parsePIDs(pids); err != nil {
			return err
		}
		for _, m := range strings.Split(metrics, ",") {
			if m = strings.TrimSpace(m); m != "" {
				t.MetricsURLs = append(t.MetricsURLs, m)
			}
		}
	} else {
		spawn.WorkDir = os.TempDir()
		spawnFn := spawnTarget
		if clusterFlags.n > 0 {
			spawnFn = func(t *target, o spawnOpts) (func(), error) {
				return spawnCluster(t, o, clusterFlags.n, clusterFlags.nats)
			}
		}
		stop, err := spawnFn(t, spawn)
		if err != nil {
			return err
		}
		defer stop()
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	// A hard bound on the whole run, whatever the scenario does.
	ctx, cancel2 := context.WithTimeout(ctx, 4*cfg.Duration+5*time.Minute)
	defer cancel2()

	fmt.Printf("loadgen: scenario=%s target=%s codec=%s url=%s pids=%v\n", cfg.Scenario, t.Kind, cfg.Codec, redact(t.URLs), t.PIDs)
	machine := machineInfo()
	start := time.Now()
	res, err := fn(ctx, cfg, t)
	if err != nil {
		return err
	}
	if bare && cfg.Scenario == "idle" && t.Kind != kindBare {
		if res["bare"], err = runBareBaseline(ctx, cfg, t, spawn); err != nil {
			return err
		}
		if bs, ok := res["bare"].(map[string]any)["slope_bytes_per_conn"].(float64); ok && bs > 0 {
			s := res["slope_bytes_per_conn"].(float64)
			res["slope_over_bare_bytes_per_conn"] = round(s-bs, 1)
			fmt.Printf("idle: %s %.0f bytes/conn vs bare netpoll %.0f bytes/conn (%.2fx, +%.0f bytes)\n", t.Kind, s, bs, s/bs, s-bs)
		}
	}
	out := map[string]any{
		"scenario":  cfg.Scenario,
		"target":    t.Kind,
		"codec":     cfg.Codec,
		"config":    cfg,
		"machine":   machine,
		"started":   start.UTC().Format(time.RFC3339),
		"elapsed_s": round(time.Since(start).Seconds(), 2),
		"results":   res,
		"command":   strings.Join(os.Args, " "),
	}
	if cfg.Out != "" {
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.Out, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Println("results written to", cfg.Out)
	}
	return nil
}

// redact hides tokens in URLs for printing.
func redact(us []string) []string {
	out := make([]string, len(us))
	for i, u := range us {
		if j := strings.Index(u, "token="); j >= 0 {
			u = u[:j] + "token=..."
		}
		out[i] = u
	}
	return out
}

// machineInfo describes the host for the report.
func machineInfo() map[string]any {
	m := map[string]any{"nproc": runtime.NumCPU(), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_at_start"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := exec.Command("uname", "-r").Output(); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	return m
}

// sample returns the latency sampling interval for n subscribers.
func (c *config) sample(n int) int {
	if c.Sample > 0 {
		return c.Sample
	}
	if c.Rate > 0 && c.Rate*float64(n) <= 200_000 {
		return 1
	}
	return 16
}

// round rounds f to d decimals.
func round(f float64, d int) float64 {
	p := 1.0
	for range d {
		p *= 10
	}
	if f < 0 {
		return float64(int64(f*p-0.5)) / p
	}
	return float64(int64(f*p+0.5)) / p
}

// runBareBaseline starts the bare netpoll server and runs the idle
// scenario against it with the same settings (the -bare baseline).
func runBareBaseline(ctx context.Context, cfg *config, t *target, spawn spawnOpts) (map[string]any, error) {
	bt := &target{Kind: kindBare, SrcIPs: t.SrcIPs, Timeout: t.Timeout}
	spawn.WorkDir = os.TempDir()
	stop, err := spawnTarget(bt, spawn)
	if err != nil {
		return nil, fmt.Errorf("bare baseline: %w", err)
	}
	defer stop()
	fmt.Printf("loadgen: bare baseline url=%s pids=%v\n", bt.URLs, bt.PIDs)
	return runIdle(ctx, cfg, bt)
}
