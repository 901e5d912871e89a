package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/arqonbus/arqonbus/auth"
)

// serverProc is a server process the load generator started.
type serverProc struct {
	cmd *exec.Cmd
	log *os.File
}

// stop sends SIGTERM, waits up to 5s, then SIGKILLs (this PID only).
func (p *serverProc) stop() {
	if p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	if p.log != nil {
		p.log.Close()
	}
}

// freePort finds an unused loopback TCP port in 20000-32767, below the
// kernel's ephemeral range (32768-60999), so a server port never collides
// with the load generator's own source ports.
func freePort() (int, error) {
	for range 200 {
		port := 20000 + rand.IntN(12768)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("loadgen: no free port in 20000-32767")
}

// waitTCP waits until addr accepts TCP connections.
func waitTCP(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("loadgen: %s did not start listening within %v", addr, d)
}

// waitHTTP waits until url answers 200.
func waitHTTP(u string, d time.Duration) error {
	deadline := time.Now().Add(d)
	cl := http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if r, err := cl.Get(u); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("loadgen: %s not ready within %v", u, d)
}

// serverCPUs, when set (-server-cpus), pins every server the load
// generator starts to these CPUs (taskset -c), so server and loader
// CPU time can be told apart and do not compete for a core.
var serverCPUs string

// startProc starts a process with its output in dir/name.log.
func startProc(dir, name string, bin string, args ...string) (*serverProc, error) {
	lf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	if serverCPUs != "" {
		args = append([]string{"-c", serverCPUs, bin}, args...)
		bin = "taskset"
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	return &serverProc{cmd: cmd, log: lf}, nil
}

// spawnOpts configures the servers the load generator starts itself.
type spawnOpts struct {
	ArqBin string // arq binary
	// ArqConfig is the arq serve --config file; "" writes one with
	// [limits] publish_rate = -1 (no per-connection publish limit: the
	// default of 10,000/s would throttle the fan-out publisher).
	ArqConfig string
	BareBin   string // bareserver binary ("" builds it)
	Hosts     int    // ArqonBus processes sharing the port (SO_REUSEPORT)
	Tenant    string
	WorkDir   string // parent of temporary working directories
}

// spawnTarget starts the target's server(s) and fills t's URLs, PIDs and
// metrics endpoint. The returned stop function ends what it started.
func spawnTarget(t *target, o spawnOpts) (func(), error) {
	dir, err := os.MkdirTemp(o.WorkDir, "loadgen-"+t.Kind+"-")
	if err != nil {
		return nil, err
	}
	var procs []*serverProc
	stop := func() {
		for _, p := range procs {
			p.stop()
		}
		if os.Getenv("LOADGEN_KEEP") == "" {
			_ = os.RemoveAll(dir)
		}
	}
	fail := func(err error) (func(), error) {
		stop()
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	switch t.Kind {
	case kindArqon:
		bin, err := filepath.Abs(o.ArqBin)
		if err != nil {
			return fail(err)
		}
		cfgFile := o.ArqConfig
		if cfgFile == "" {
			cfgFile = filepath.Join(dir, "arq.toml")
			if err := os.WriteFile(cfgFile, []byte("[limits]\npublish_rate = -1\n"), 0o644); err != nil {
				return fail(err)
			}
		} else if cfgFile, err = filepath.Abs(cfgFile); err != nil {
			return fail(err)
		}
		hosts := max(o.Hosts, 1)
		// A host group is one cluster: the first process's embedded NATS
		// listens, the others join it (as in bench/hostgroup), so a
		// message published on one host reaches subscribers on all.
		natsAddr := ""
		if hosts > 1 {
			nport, err := freePort()
			if err != nil {
				return fail(err)
			}
			natsAddr = "127.0.0.1:" + strconv.Itoa(nport)
		}
		for h := range hosts {
			aport, err := freePort()
			if err != nil {
				return fail(err)
			}
			admin := "127.0.0.1:" + strconv.Itoa(aport)
			args := []string{"serve", "--listen", addr, "--admin", admin, "--config", cfgFile}
			if hosts > 1 {
				args = append(args, "--reuse-port")
				if h == 0 {
					args = append(args, "--embedded-nats-listen", natsAddr)
				} else {
					args = append(args, "--nats", "nats://"+natsAddr)
				}
			}
			p, err := startProc(dir, fmt.Sprintf("arq-%d", h), bin, args...)
			if err != nil {
				return fail(err)
			}
			procs = append(procs, p)
			if err := waitHTTP("http://"+admin+"/readyz", 30*time.Second); err != nil {
				return fail(err)
			}
			t.PIDs = append(t.PIDs, p.cmd.Process.Pid)
			t.MetricsURLs = append(t.MetricsURLs, "http://"+admin+"/metrics")
		}
		secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
		if err != nil {
			return fail(err)
		}
		tok, err := auth.Mint(secret, auth.MintOptions{Tenant: o.Tenant, User: "loadgen", TTL: 4 * time.Hour})
		if err != nil {
			return fail(err)
		}
		t.URLs = []string{"ws://" + addr + "/v1/socket?token=" + url.QueryEscape(tok)}
	case kindNATS:
		self, err := os.Executable()
		if err != nil {
			return fail(err)
		}
		p, err := startProc(dir, "nats", self, "-serve-nats", addr)
		if err != nil {
			return fail(err)
		}
		procs = append(procs, p)
		if err := waitTCP(addr, 20*time.Second); err != nil {
			return fail(err)
		}
		t.PIDs = []int{p.cmd.Process.Pid}
		t.URLs = []string{"ws://" + addr + "/"}
	case kindBare:
		bin := o.BareBin
		if bin == "" {
			bin = filepath.Join(dir, "bareserver")
			out, err := exec.Command("go", "build", "-o", bin, "github.com/arqonbus/arqonbus/bench/loadgen/bareserver").CombinedOutput()
			if err != nil {
				return fail(fmt.Errorf("loadgen: building bareserver: %v: %s", err, out))
			}
		}
		p, err := startProc(dir, "bare", bin, "-listen", addr)
		if err != nil {
			return fail(err)
		}
		procs = append(procs, p)
		if err := waitTCP(addr, 20*time.Second); err != nil {
			return fail(err)
		}
		t.PIDs = []int{p.cmd.Process.Pid}
		t.URLs = []string{"ws://" + addr + "/"}
	default:
		return fail(fmt.Errorf("loadgen: unknown target %q", t.Kind))
	}
	return stop, nil
}

// serveNATS runs an embedded nats-server with only a WebSocket listener
// on addr (plus a client port on a random loopback port) until SIGTERM or
// SIGINT. It is the -serve-nats mode of the loadgen binary, so the server
// has its own process and RSS.
func serveNATS(addr string) error {
	// natsNode: the cluster mode's client listener, routes and accounts
	// (cluster.go); without them a WebSocket listener only.
	opts, remotes, err := natsServerOptions(addr, natsNode)
	if err != nil {
		return err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		return errors.New("loadgen: nats-server did not start")
	}
	if err := waitRemotes(s, remotes, 30*time.Second); err != nil {
		s.Shutdown()
		return err
	}
	fmt.Printf("nats-server %s websocket: ws://%s/ client: %s routes: %d\n%s\n", server.VERSION, addr, s.ClientURL(), remotes, natsReadyLine)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// parsePIDs parses "123,456".
func parsePIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("loadgen: bad pid %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}
