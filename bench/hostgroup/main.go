// Command hostgroup holds many subscribed connections on one host through a
// group of `arq serve` processes sharing one port (SO_REUSEPORT) and one
// NATS, broadcasts to all of them, and reports deliveries, unexpected
// disconnects and RSS per process. Every run is bounded in connections and
// time, and targets loopback only.
//
//	go run ./bench/hostgroup -servers 6 -clients 6 -conns 100000 -hold 60s
//
// It starts the servers (from -arq-bin) and re-executes itself as -clients
// child processes (each under the 20,000-file limit), spreading client
// sockets over several loopback source addresses.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

type childReport struct {
	Opened       int64 `json:"opened"`
	Failed       int64 `json:"failed"`
	Received     int64 `json:"received"`
	Disconnected int64 `json:"unexpected_disconnects"`
	Complete     int64 `json:"conns_with_every_broadcast"`
}

func main() {
	child := flag.Bool("child", false, "internal: run as a client process")
	url := flag.String("url", "", "internal: socket URL with token")
	n := flag.Int("n", 0, "internal: connections of this child")
	src := flag.String("src", "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5", "client source addresses")
	servers := flag.Int("servers", 6, "arq serve processes in the group")
	clients := flag.Int("clients", 6, "client processes")
	conns := flag.Int("conns", 100000, "connections in total")
	hold := flag.Duration("hold", 60*time.Second, "how long to hold them, broadcasting")
	every := flag.Duration("every", 10*time.Second, "broadcast interval during the hold")
	arqBin := flag.String("arq-bin", ".bin/arq", "arq binary")
	port := flag.Int("port", 18900, "group port (loopback)")
	out := flag.String("out", "", "JSON result file")
	broadcasts := flag.Int("internal-broadcasts", 0, "internal: broadcasts the child must see")
	flag.Parse()
	raiseNoFile()
	if *child {
		runChild(*url, *n, strings.Split(*src, ","), *broadcasts, *hold+2*time.Minute)
		return
	}
	if err := runParent(*servers, *clients, *conns, *hold, *every, *arqBin, *port, *src, *out); err != nil {
		fmt.Fprintln(os.Stderr, "hostgroup:", err)
		os.Exit(1)
	}
}

func raiseNoFile() {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
	}
}

func rss(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func runParent(nServers, nClients, total int, hold, every time.Duration, arqBin string, port int, src, out string) error {
	arqBin, _ = filepath.Abs(arqBin)
	dir, err := os.MkdirTemp("", "hostgroup")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(os.Interrupt)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	natsAddr := fmt.Sprintf("127.0.0.1:%d", port+1)
	var pids []int
	for i := 0; i < nServers; i++ {
		args := []string{"serve", "--listen", listen, "--admin", fmt.Sprintf("127.0.0.1:%d", port+10+i), "--reuse-port"}
		if i == 0 {
			args = append(args, "--embedded-nats-listen", natsAddr)
		} else {
			args = append(args, "--nats", "nats://"+natsAddr)
		}
		cmd := exec.Command(arqBin, args...)
		cmd.Dir = dir
		logf, _ := os.Create(filepath.Join(dir, fmt.Sprintf("serve-%d.log", i)))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, cmd)
		pids = append(pids, cmd.Process.Pid)
		if err := waitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", port+10+i)); err != nil {
			return fmt.Errorf("server %d: %w", i, err)
		}
	}
	cmdTok := exec.Command(arqBin, "token", "--tenant", "group", "--sub", "bench", "--ttl", "1h")
	cmdTok.Dir = dir
	tok, err := cmdTok.Output()
	if err != nil {
		return err
	}
	sockURL := "ws://" + listen + "/v1/socket?token=" + strings.TrimSpace(string(tok))
	nBroadcasts := int(hold / every)
	self, _ := os.Executable()
	type kid struct {
		cmd    *exec.Cmd
		ready  chan struct{}
		report chan childReport
	}
	var kids []*kid
	start := time.Now()
	for i := 0; i < nClients; i++ {
		n := total / nClients
		if i == nClients-1 {
			n = total - n*(nClients-1)
		}
		cmd := exec.Command(self, "-child", "-url", sockURL, "-n", strconv.Itoa(n), "-src", src,
			"-internal-broadcasts", strconv.Itoa(nBroadcasts), "-hold", hold.String())
		cmd.Stderr = os.Stderr
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return err
		}
		k := &kid{cmd: cmd, ready: make(chan struct{}), report: make(chan childReport, 1)}
		kids = append(kids, k)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				l := sc.Text()
				switch {
				case l == "READY":
					close(k.ready)
				case strings.HasPrefix(l, "REPORT "):
					var r childReport
					_ = json.Unmarshal([]byte(l[7:]), &r)
					k.report <- r
				default:
					fmt.Println(l)
				}
			}
		}()
	}
	for i, k := range kids {
		select {
		case <-k.ready:
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("client %d not ready within 5 minutes", i)
		}
	}
	rampDur := time.Since(start)
	fmt.Printf("all %d connections subscribed in %s\n", total, rampDur.Round(time.Millisecond))
	rssAt := func() (sum int64, each []int64) {
		for _, p := range pids {
			r := rss(p)
			each = append(each, r)
			sum += r
		}
		return
	}
	sumReady, eachReady := rssAt()
	// The publisher: one more connection through the group.
	pub, _, _, err := ws.Dialer{Timeout: 10 * time.Second}.Dial(context.Background(), sockURL)
	if err != nil {
		return err
	}
	defer pub.Close()
	for b := 0; b < nBroadcasts; b++ {
		time.Sleep(every)
		frame := fmt.Sprintf(`{"op":"pub","subject":"group.all","data":"broadcast %d"}`, b)
		if err := ws.WriteFrame(pub, ws.MaskFrame(ws.NewTextFrame([]byte(frame)))); err != nil {
			return err
		}
		fmt.Printf("broadcast %d sent at +%s\n", b, time.Since(start).Round(time.Second))
	}
	time.Sleep(3 * time.Second)
	sumHeld, eachHeld := rssAt()
	var tot childReport
	for _, k := range kids {
		_ = k.cmd.Process.Signal(os.Interrupt)
		select {
		case r := <-k.report:
			tot.Opened += r.Opened
			tot.Failed += r.Failed
			tot.Received += r.Received
			tot.Disconnected += r.Disconnected
			tot.Complete += r.Complete
		case <-time.After(30 * time.Second):
			return fmt.Errorf("a client did not report")
		}
		_ = k.cmd.Wait()
	}
	res := map[string]any{
		"date": time.Now().UTC().Format(time.RFC3339), "servers": nServers, "clients": nClients,
		"conns": total, "hold": hold.String(), "broadcasts": nBroadcasts, "ramp_seconds": rampDur.Seconds(),
		"opened": tot.Opened, "failed": tot.Failed, "received": tot.Received,
		"expected": int64(total) * int64(nBroadcasts), "unexpected_disconnects": tot.Disconnected,
		"conns_with_every_broadcast": tot.Complete,
		"server_rss_bytes_ready":     eachReady, "server_rss_total_ready": sumReady,
		"server_rss_bytes_end": eachHeld, "server_rss_total_end": sumHeld,
		"server_rss_per_conn_ready": float64(sumReady) / float64(total),
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(b))
	if out != "" {
		_ = os.WriteFile(out, append(b, '\n'), 0o644)
	}
	if tot.Failed > 0 || tot.Disconnected > 0 || tot.Received != int64(total)*int64(nBroadcasts) {
		return fmt.Errorf("not every connection held and received every broadcast")
	}
	return nil
}

func waitReady(url string) error {
	for i := 0; i < 100; i++ {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready", url)
}

// runChild opens n subscribed connections, prints READY, counts MSG frames
// until interrupted, then prints its REPORT.
func runChild(url string, n int, srcs []string, broadcasts int, limit time.Duration) {
	var rep childReport
	var stopping atomic.Bool
	var wg sync.WaitGroup
	var complete atomic.Int64
	sem := make(chan struct{}, 64)
	conns := make([]net.Conn, n)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			d := ws.Dialer{Timeout: 30 * time.Second, NetDial: (&net.Dialer{
				LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcs[i%len(srcs)])}}).DialContext}
			var c net.Conn
			var br *bufio.Reader
			var err error
			for try := 0; try < 5; try++ {
				if c, br, _, err = d.Dial(context.Background(), url); err == nil {
					break
				}
				time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
			}
			if err != nil {
				atomic.AddInt64(&rep.Failed, 1)
				return
			}
			if br == nil {
				br = bufio.NewReaderSize(c, 512)
			}
			conns[i] = c
			if readOne(br) != nil { // welcome
				atomic.AddInt64(&rep.Failed, 1)
				return
			}
			ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame([]byte(`{"op":"sub","id":1,"subject":"group.*"}`))))
			if readOne(br) != nil { // ack
				atomic.AddInt64(&rep.Failed, 1)
				return
			}
			atomic.AddInt64(&rep.Opened, 1)
			go func() {
				got := 0
				for {
					h, err := ws.ReadHeader(br)
					if err == nil {
						_, err = br.Discard(int(h.Length))
					}
					if err != nil {
						if !stopping.Load() {
							atomic.AddInt64(&rep.Disconnected, 1)
						}
						return
					}
					switch h.OpCode {
					case ws.OpText:
						got++
						atomic.AddInt64(&rep.Received, 1)
						if got == broadcasts {
							complete.Add(1)
						}
					case ws.OpPing:
						ws.WriteFrame(c, ws.MaskFrame(ws.NewPongFrame(nil)))
					}
				}
			}()
		}(i)
	}
	wg.Wait()
	fmt.Println("READY")
	sig := make(chan os.Signal, 1)
	signalNotify(sig)
	select {
	case <-sig:
	case <-time.After(limit):
	}
	stopping.Store(true)
	rep.Complete = complete.Load()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	b, _ := json.Marshal(rep)
	fmt.Println("REPORT " + string(b))
}

func readOne(br *bufio.Reader) error {
	h, err := ws.ReadHeader(br)
	if err != nil {
		return err
	}
	_, err = br.Discard(int(h.Length))
	return err
}
