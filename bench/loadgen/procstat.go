package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// readRSS returns a process's resident set size in bytes from
// /proc/<pid>/status (VmRSS).
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(rest))
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("loadgen: no VmRSS for pid %d", pid)
}

// sumRSS returns the summed RSS of pids (0 for none); unreadable pids are
// skipped.
func sumRSS(pids []int) int64 {
	var t int64
	for _, p := range pids {
		if r, err := readRSS(p); err == nil {
			t += r
		}
	}
	return t
}

// selfRSS is the load generator's own RSS.
func selfRSS() int64 {
	r, _ := readRSS(os.Getpid())
	return r
}

// readCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func readCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// sumCPU sums readCPU over pids.
func sumCPU(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		t += readCPU(p)
	}
	return t
}

// scrapeMetrics fetches a Prometheus text endpoint and returns each sample
// name (labels dropped) summed over its label sets.
func scrapeMetrics(url string) (map[string]float64, error) {
	if url == "" {
		return nil, nil
	}
	cl := http.Client{Timeout: 3 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		// Keep histogram buckets by their le label; drop other labels.
		if strings.Contains(name, "_bucket{") {
			if i := strings.Index(name, `le="`); i >= 0 {
				j := strings.IndexByte(name[i+4:], '"')
				if j >= 0 {
					base := name[:strings.IndexByte(name, '{')]
					out[base+"|"+name[i+4:i+4+j]] += v
					continue
				}
			}
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		out[name] += v
	}
	return out, sc.Err()
}

// promQuantile estimates quantile q of a Prometheus histogram from the
// difference of two scrapes (bucket upper bounds, linear within a bucket).
func promQuantile(before, after map[string]float64, name string, q float64) float64 {
	type b struct {
		le float64
		c  float64
	}
	var bs []b
	for k, v := range after {
		base, le, ok := strings.Cut(k, "|")
		if !ok || base != name+"_bucket" {
			continue
		}
		x, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		bs = append(bs, b{x, v - before[k]})
	}
	if len(bs) == 0 {
		return 0
	}
	for i := 1; i < len(bs); i++ {
		for j := i; j > 0 && bs[j].le < bs[j-1].le; j-- {
			bs[j], bs[j-1] = bs[j-1], bs[j]
		}
	}
	total := bs[len(bs)-1].c
	if total <= 0 {
		return 0
	}
	rank := q * total
	prevLe, prevC := 0.0, 0.0
	for _, x := range bs {
		if x.c >= rank {
			if isInf(x.le) {
				return prevLe
			}
			if x.c == prevC {
				return x.le
			}
			return prevLe + (x.le-prevLe)*(rank-prevC)/(x.c-prevC)
		}
		prevLe, prevC = x.le, x.c
	}
	return prevLe
}

func isInf(f float64) bool { return f > 1e300 }

// selfPID is the load generator's PID.
var selfPID = os.Getpid()

// cpuTimes is one CPU's line of /proc/stat, in clock ticks.
type cpuTimes struct{ busy, softirq, steal, total uint64 }

// readCPUTimes returns every CPU's times from /proc/stat (cpu0, cpu1, ...).
func readCPUTimes() []cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	var out []cpuTimes
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var v [8]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		// user nice system idle iowait irq softirq steal
		var t cpuTimes
		t.busy = v[0] + v[1] + v[2] + v[5] + v[6]
		t.softirq = v[6]
		t.steal = v[7]
		t.total = t.busy + v[3] + v[4] + v[7]
		out = append(out, t)
	}
	return out
}

// cpuBusy summarizes each CPU between two readings: the fraction of the
// time it was busy (user, system, interrupts), in softirq (where loopback
// TCP delivers, often outside any process's CPU time) and stolen by the
// hypervisor.
func cpuBusy(a, b []cpuTimes) []map[string]float64 {
	var out []map[string]float64
	for i := range b {
		if i >= len(a) {
			break
		}
		tot := float64(b[i].total - a[i].total)
		if tot <= 0 {
			continue
		}
		out = append(out, map[string]float64{
			"busy":    round(float64(b[i].busy-a[i].busy)/tot, 3),
			"softirq": round(float64(b[i].softirq-a[i].softirq)/tot, 3),
			"steal":   round(float64(b[i].steal-a[i].steal)/tot, 3),
		})
	}
	return out
}
