package gateway

import (
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
)

// flushFixture is a gateway with n subscribers of "feed.x", each writing
// to one end of a Unix socket pair whose other end the test reads.
type flushFixture struct {
	g     *Gateway
	conns []*conn
	peers []int
	buf   []byte
}

func newFlushFixture(t testing.TB, n int) *flushFixture {
	t.Helper()
	v, _ := auth.NewVerifier(testSecret)
	g, err := New(Config{Verifier: v, PublishRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	f := &flushFixture{g: g, buf: make([]byte, 1<<20)}
	for i := 0; i < n; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		c := &conn{g: g, fd: int32(fds[0]), seq: uint64(i), ident: auth.Identity{Tenant: "t1", User: "u" + strconv.Itoa(i)}}
		c.state.Store(stateOpen)
		if err := g.subscribeRoute(c, "feed.x"); err != nil {
			t.Fatal(err)
		}
		c.subs = []string{"feed.x"}
		c.nsubs.Store(1)
		f.conns = append(f.conns, c)
		f.peers = append(f.peers, fds[1])
	}
	return f
}

// read returns the bytes waiting at subscriber i's peer.
func (f *flushFixture) read(t testing.TB, i int) int {
	n, err := unix.Read(f.peers[i], f.buf)
	if err == unix.EAGAIN {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// One read's worth of publishes (k messages routed with one flush list)
// reaches every subscriber in one write, and the whole path from route to
// the kernel allocates nothing in steady state.
func TestFlushOneWritePerRead(t *testing.T) {
	const subs, k = 100, 16
	f := newFlushFixture(t, subs)
	env := &pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: []byte("hello world"), Text: true, Timestamp: 1}
	frameLen := 0
	read := func() {
		fl := getFlushList()
		for j := 0; j < k; j++ {
			if n := f.g.route(env, fl); n != subs {
				t.Fatalf("queued on %d connections", n)
			}
		}
		fl.run()
	}
	drain := func() {
		f.waitIdle()
		for i := range f.conns {
			n := f.read(t, i)
			if frameLen == 0 {
				frameLen = n / k
			}
			if n != k*frameLen {
				t.Fatalf("subscriber %d: %d bytes, want %d frames of %d", i, n, k, frameLen)
			}
		}
	}
	read()
	drain()
	writes0 := testutil.ToFloat64(f.g.metrics.writes)
	read()
	drain()
	if w := testutil.ToFloat64(f.g.metrics.writes) - writes0; w != subs {
		t.Errorf("%v writes for %d messages to %d subscribers, want one per subscriber", w, k, subs)
	}
	// (Under -race sync.Pool drops objects on purpose, so only the plain build counts.)
	if allocs := testing.AllocsPerRun(200, func() { read(); drain() }); allocs != 0 && !raceEnabled {
		t.Errorf("%v allocs per read of %d publishes", allocs, k)
	}
	for _, c := range f.conns {
		c.mu.Lock()
		if c.writing || len(c.out) != 0 || c.outBytes != 0 {
			t.Fatalf("after flush: writing %v, %d queued, %d bytes", c.writing, len(c.out), c.outBytes)
		}
		c.mu.Unlock()
	}
}

// A large flush list is split over the writers; every subscriber still
// gets every frame, in order, exactly once.
func TestFlushLargeFanout(t *testing.T) {
	const subs = 1000
	f := newFlushFixture(t, subs)
	for j := 0; j < 5; j++ {
		env := &pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: []byte("m" + strconv.Itoa(j)), Text: true, Timestamp: 1}
		fl := getFlushList()
		f.g.route(env, fl)
		fl.run()
	}
	for i := range f.conns {
		waitFor(t, func() bool {
			c := f.conns[i]
			c.mu.Lock()
			defer c.mu.Unlock()
			return !c.writing
		})
		got := string(f.buf[:f.read(t, i)])
		for j := 0; j < 5; j++ {
			want := `"data":"m` + strconv.Itoa(j) + `"`
			at := strings.Index(got, want)
			if at < 0 {
				t.Fatalf("subscriber %d: message %d missing in %q", i, j, got)
			}
			got = got[at+len(want):]
		}
	}
}

// BenchmarkFlush: one read's k publishes routed to N subscribers and
// written (one writev each, to socket pairs), then read back by the
// benchmark. ns/op is per read; ns/delivery divides by k*N.
func BenchmarkFlush(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		for _, k := range []int{1, 16} {
			b.Run("subs="+strconv.Itoa(n)+"/msgs="+strconv.Itoa(k), func(b *testing.B) {
				f := newFlushFixture(b, n)
				env := &pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: make([]byte, 64), Timestamp: 1}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					fl := getFlushList()
					for j := 0; j < k; j++ {
						f.g.route(env, fl)
					}
					fl.run()
					f.waitIdle() // the writers' work is part of the op
					b.StopTimer()
					for c := range f.conns {
						f.read(b, c)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n*k), "ns/delivery")
			})
		}
	}
}

// idle reports whether no writer owns c's queue.
func (c *conn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.writing
}

// waitIdle waits until no writer owns any of the fixture's queues (every
// round handed to the writers has reached the kernel).
func (f *flushFixture) waitIdle() {
	for _, c := range f.conns {
		for !c.idle() {
			runtime.Gosched()
		}
	}
}

// While the writers are busy, frames accumulate: messages from other
// nodes and local publishes, interleaved, reach each subscriber in order
// in one writev per round, and a queue longer than maxIovecs takes a
// second round from the same writer.
func TestWritersCoalesceLocalAndRemote(t *testing.T) {
	const subs = 10
	f := newFlushFixture(t, subs)
	writes := func() float64 { return testutil.ToFloat64(f.g.metrics.writes) }
	msg := func(j int) *pb.Envelope {
		return &pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: []byte("m" + strconv.Itoa(j) + "."), Text: true, Timestamp: 1}
	}
	check := func(want int) {
		t.Helper()
		f.waitIdle()
		for i := range f.conns {
			var got []byte
			for {
				n := f.read(t, i)
				if n == 0 {
					break
				}
				got = append(got, f.buf[:n]...)
			}
			s := string(got)
			for j := 0; j < want; j++ {
				w := `"data":"m` + strconv.Itoa(j) + `."`
				at := strings.Index(s, w)
				if at < 0 {
					t.Fatalf("subscriber %d: message %d missing or out of order", i, j)
				}
				s = s[at+len(w):]
			}
			if strings.Contains(s, `"data"`) {
				t.Fatalf("subscriber %d: more than %d messages", i, want)
			}
		}
	}

	for _, k := range []int{5, maxIovecs + 44} {
		w0 := writes()
		sched.gate.Lock() // the writers are busy
		for j := 0; j < k; j++ {
			if j%2 == 0 {
				f.g.deliverRemote(msg(j))
			} else {
				fl := getFlushList()
				f.g.route(msg(j), fl)
				fl.run()
			}
		}
		for i := range f.conns {
			if n := f.read(t, i); n != 0 {
				t.Fatalf("subscriber %d got %d bytes while the writers were held", i, n)
			}
		}
		sched.gate.Unlock()
		check(k)
		rounds := float64((k + maxIovecs - 1) / maxIovecs)
		if w := writes() - w0; w != rounds*subs {
			t.Errorf("%d messages: %v writes, want %v per subscriber", k, w, rounds)
		}
	}
}

// Idle, a read's reply to its own connection is written by the reader
// itself, before the read's handling returns: no writer is woken.
func TestIdleReplyInline(t *testing.T) {
	f := newFlushFixture(t, 1)
	c := f.conns[0]
	sched.start()
	waitFor(t, func() bool { return sched.shardOf(c).parked.Load() })
	fl := getFlushList()
	f.g.route(&pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: []byte("x"), Text: true, Timestamp: 1}, fl)
	fl.run()
	if c.idle() != true || f.read(t, 0) == 0 {
		t.Fatal("the frame was not written by the reader")
	}
}

// A reply to the connection whose read this was leaves with the read,
// even while the writers are held (busy or lingering): a client waiting
// for its ACK is not slowed by a busy room. The other connections wait for
// their writer.
func TestReplyNotHeldByWriters(t *testing.T) {
	const subs = 10
	f := newFlushFixture(t, subs)
	self := f.conns[0]
	sched.gate.Lock()
	fl := getFlushList()
	self.flush = fl
	f.g.route(&pb.Envelope{Tenant: "t1", Subject: "feed.x", Payload: []byte("x"), Text: true, Timestamp: 1}, fl)
	self.enqueueReply(encodeServerFrame(true, &pb.ServerFrame{Op: pb.Op_OP_ACK, Id: 7}))
	self.flush = nil
	fl.run()
	got := string(f.buf[:f.read(t, 0)])
	if !strings.Contains(got, `"data":"x"`) || !strings.Contains(got, `"op":"ack","id":7`) {
		sched.gate.Unlock()
		t.Fatalf("the replying connection got %q while the writers were held", got)
	}
	for i := 1; i < subs; i++ {
		if n := f.read(t, i); n != 0 {
			sched.gate.Unlock()
			t.Fatalf("subscriber %d written while the writers were held", i)
		}
	}
	sched.gate.Unlock()
	f.waitIdle()
	for i := 1; i < subs; i++ {
		if n := f.read(t, i); n == 0 {
			t.Fatalf("subscriber %d got nothing", i)
		}
	}
}
