// Command bareserver is the load generator's baseline: the smallest
// WebSocket broadcast server on the same stack as the ArqonBus gateway
// (cloudwego/netpoll + gobwas/ws, netpoll.LinkBufferCap and
// netpoll.Config.BufferSize set to 512), with no auth, no routing trie, no
// metrics and one subscription per connection. Measuring it beside the
// gateway shows the event loop's floor in memory per connection and in
// fan-out cost.
//
// Protocol (text frames): the server greets with "W"; "S subject"
// subscribes (reply "A"); "P subject payload" sends "M payload" to every
// subscriber of subject.
//
// Writes are batched per input read: the frames of the publishes one read
// brings (one pipelined batch) are encoded once, copied to each
// subscriber's netpoll output buffer as one block, and each subscriber is
// flushed once, so a batch leaves in one write per subscriber (and what
// queues while a write is under way leaves with the next flush).
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// conn is the per-connection state.
type conn struct {
	nc      netpoll.Connection
	wmu     sync.Mutex
	open    bool   // upgraded
	subject string // the one subscription, or ""
	rest    []byte // unparsed input carried to the next call (nil when none)
	queued  bool   // in a flushSet's list (the publishing connection's goroutine)
}

// server holds the subscription table.
type server struct {
	mu   sync.RWMutex
	subs map[string]map[*conn]struct{}
}

type connKey struct{}

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "listen address")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file until SIGTERM")
	flag.Parse()
	if *cpuProfile != "" {
		if f, err := os.Create(*cpuProfile); err == nil {
			_ = pprof.StartCPUProfile(f)
		}
	}
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
	}
	netpoll.LinkBufferCap = 512
	_ = netpoll.Configure(netpoll.Config{BufferSize: 512})
	s := &server{subs: map[string]map[*conn]struct{}{}}
	ln, err := netpoll.CreateListener("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	loop, err := netpoll.NewEventLoop(s.onRequest,
		netpoll.WithOnPrepare(func(nc netpoll.Connection) context.Context {
			c := &conn{nc: nc}
			_ = nc.AddCloseCallback(func(netpoll.Connection) error { s.unsubscribe(c); return nil })
			return context.WithValue(context.Background(), connKey{}, c)
		}),
		netpoll.WithWriteTimeout(10*time.Second),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bareserver: ws://%s/\n", *listen)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		pprof.StopCPUProfile()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = loop.Shutdown(ctx)
		os.Exit(0)
	}()
	if err := loop.Serve(ln); err != nil {
		log.Fatal(err)
	}
}

// onRequest consumes all buffered input: complete units are handled, a
// partial one is kept in c.rest.
func (s *server) onRequest(ctx context.Context, nc netpoll.Connection) error {
	c, _ := ctx.Value(connKey{}).(*conn)
	r := nc.Reader()
	n := r.Len()
	if c == nil || n == 0 {
		return nil
	}
	data, err := r.Peek(n)
	if err != nil {
		return nc.Close()
	}
	if c.rest != nil {
		data = append(c.rest, data...)
	}
	var fl flushSet
	used, err := s.process(c, data, &fl)
	fl.flush(s)
	_ = r.Skip(n)
	_ = r.Release()
	if err != nil {
		return nc.Close()
	}
	if left := len(data) - used; left > 0 {
		if left > 1<<20 {
			return nc.Close()
		}
		c.rest = append([]byte(nil), data[used:]...)
	} else {
		c.rest = nil
	}
	return nil
}

// rw adapts a byte slice and a buffer for ws.Upgrader.
type rw struct {
	io.Reader
	io.Writer
}

// process handles complete units in data and returns the bytes used.
func (s *server) process(c *conn, data []byte, fl *flushSet) (int, error) {
	off := 0
	if !c.open {
		end := bytes.Index(data, []byte("\r\n\r\n"))
		if end < 0 {
			if len(data) > 8192 {
				return 0, fmt.Errorf("upgrade too long")
			}
			return 0, nil
		}
		var resp bytes.Buffer
		if _, err := (ws.Upgrader{}).Upgrade(rw{bytes.NewReader(data[:end+4]), &resp}); err != nil {
			c.write(resp.Bytes())
			return 0, err
		}
		c.open = true
		c.write(appendFrame(resp.Bytes(), ws.OpText, []byte("W")))
		off = end + 4
	}
	for off < len(data) {
		p := data[off:]
		if len(p) < 2 {
			break
		}
		op := ws.OpCode(p[0] & 0x0f)
		masked := p[1]&0x80 != 0
		ln := uint64(p[1] & 0x7f)
		hl := 2
		switch ln {
		case 126:
			if len(p) < 4 {
				return off, nil
			}
			ln, hl = uint64(binary.BigEndian.Uint16(p[2:])), 4
		case 127:
			if len(p) < 10 {
				return off, nil
			}
			ln, hl = binary.BigEndian.Uint64(p[2:]), 10
		}
		if !masked || ln > 1<<20 {
			return off, fmt.Errorf("bad frame")
		}
		total := hl + 4 + int(ln)
		if len(p) < total {
			return off, nil
		}
		var mask [4]byte
		copy(mask[:], p[hl:hl+4])
		payload := p[hl+4 : total]
		ws.Cipher(payload, mask, 0)
		off += total
		switch op {
		case ws.OpText, ws.OpBinary:
			s.handle(c, payload, fl)
		case ws.OpPing:
			c.write(appendFrame(nil, ws.OpPong, payload))
		case ws.OpClose:
			return off, fmt.Errorf("closed by peer")
		}
	}
	return off, nil
}

// handle runs one client message.
func (s *server) handle(c *conn, m []byte, fl *flushSet) {
	if len(m) < 2 {
		return
	}
	switch m[0] {
	case 'S':
		s.unsubscribe(c)
		subj := string(m[2:])
		s.mu.Lock()
		set := s.subs[subj]
		if set == nil {
			set = map[*conn]struct{}{}
			s.subs[subj] = set
		}
		set[c] = struct{}{}
		c.subject = subj
		s.mu.Unlock()
		c.write(appendFrame(nil, ws.OpText, []byte("A")))
	case 'P':
		rest := m[2:]
		sp := bytes.IndexByte(rest, ' ')
		if sp < 0 {
			return
		}
		fl.publish(rest[:sp], rest[sp+1:])
	}
}

func (s *server) unsubscribe(c *conn) {
	s.mu.Lock()
	if c.subject != "" {
		if set := s.subs[c.subject]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(s.subs, c.subject)
			}
		}
		c.subject = ""
	}
	s.mu.Unlock()
}

// write copies b into the connection's output and flushes.
func (c *conn) write(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w := c.nc.Writer()
	buf, err := w.Malloc(len(b))
	if err != nil {
		return
	}
	copy(buf, b)
	_ = w.Flush()
}

// buffer copies b into the connection's output without flushing and
// reports whether it did.
func (c *conn) buffer(b []byte) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	buf, err := c.nc.Writer().Malloc(len(b))
	if err != nil {
		return false
	}
	copy(buf, b)
	return true
}

// flushSet collects the publishes of one input read: the "M payload"
// frames of consecutive publishes to the same subject are concatenated
// (in order) and copied to each subscriber's output once; each subscriber
// is flushed once at the end.
type flushSet struct {
	out []outBatch
	cs  []*conn
}

// outBatch is consecutive frames for one subject.
type outBatch struct {
	subject string
	frames  []byte
}

// publish queues "M payload" for subject's subscribers.
func (f *flushSet) publish(subject, payload []byte) {
	if n := len(f.out); n == 0 || f.out[n-1].subject != string(subject) {
		f.out = append(f.out, outBatch{subject: string(subject)})
	}
	b := &f.out[len(f.out)-1]
	b.frames = appendFrame(b.frames, ws.OpText, append([]byte("M "), payload...))
}

// flush copies each batch to its subject's subscribers and writes every
// output once.
func (f *flushSet) flush(s *server) {
	var targets []*conn
	for _, b := range f.out {
		s.mu.RLock()
		set := s.subs[b.subject]
		targets = targets[:0]
		for t := range set {
			targets = append(targets, t)
		}
		s.mu.RUnlock()
		for _, t := range targets {
			if t.buffer(b.frames) && !t.queued {
				t.queued = true
				f.cs = append(f.cs, t)
			}
		}
	}
	for _, c := range f.cs {
		c.wmu.Lock()
		c.queued = false
		_ = c.nc.Writer().Flush()
		c.wmu.Unlock()
	}
}

// appendFrame appends an unmasked server frame.
func appendFrame(dst []byte, op ws.OpCode, p []byte) []byte {
	dst = append(dst, 0x80|byte(op))
	switch n := len(p); {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, p...)
}
