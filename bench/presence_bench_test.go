package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/brain"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/internal/spinetest"
	"github.com/arqonbus/arqonbus/internal/valkeytest"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/spine"
)

// BenchmarkPresenceQuery times presence queries of a 10,000-member room
// through the whole path, one after another: client -> gateway (loopback
// WebSocket) -> NATS request -> brain -> store -> back. The room is filled
// by a synthetic node's stream (pb.PresenceBatch joins on
// "arq.$brain.node.<node>", heartbeated while the benchmark runs). Each op
// is one query: query=count is count_only; query=page asks for a page of
// 1000, walking the ten pages with cursors in turn. Reports p50 and p99 of
// one query in us.
//
//	go test -run '^$' -bench BenchmarkPresenceQuery -benchtime 2000x -count 3 ./bench/
func BenchmarkPresenceQuery(b *testing.B) {
	const members = 10000
	for _, kind := range []string{"memory", "valkey"} {
		b.Run("store="+kind, func(b *testing.B) {
			natsURL := spinetest.NATS(b)
			var store brain.Store
			if kind == "memory" {
				store = brain.NewMemoryStore()
			} else {
				srv := valkeytest.Start(b)
				vs, err := brain.NewValkeyStore(brain.ValkeyConfig{Addr: srv.Addr()})
				if err != nil {
					b.Fatal(err)
				}
				store = vs
			}
			defer store.Close()
			bnc, err := nats.Connect(natsURL)
			if err != nil {
				b.Fatal(err)
			}
			defer bnc.Close()
			br, err := brain.New(brain.Config{Conn: bnc, Store: store})
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			url := startPresenceGateway(b, natsURL)
			stop := fillSyntheticRoom(b, natsURL, "big", members)
			defer stop()

			for _, codec := range []client.Codec{client.Protobuf, client.JSON} {
				codecName := map[client.Codec]string{client.Protobuf: "proto", client.JSON: "json"}[codec]
				tok, _ := auth.Mint(secret, auth.MintOptions{Tenant: "acme", User: "asker", TTL: time.Hour})
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := client.Dial(ctx, client.Options{URL: url, Token: tok, Codec: codec})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				waitCount(b, c, "big", members)
				for _, q := range []string{"count", "page"} {
					b.Run("codec="+codecName+"/query="+q, func(b *testing.B) {
						lat := make([]time.Duration, 0, b.N)
						cursor := ""
						ctx := context.Background()
						b.ReportAllocs()
						b.ResetTimer()
						for i := 0; i < b.N; i++ {
							o := client.PresenceOptions{CountOnly: q == "count", Limit: 1000, Cursor: cursor}
							t0 := time.Now()
							a, err := c.Presence(ctx, "big", o)
							lat = append(lat, time.Since(t0))
							if err != nil {
								b.Fatal(err)
							}
							if a.Count != members || (q == "page" && len(a.Members) != 1000) {
								b.Fatalf("count %d, %d members", a.Count, len(a.Members))
							}
							cursor = a.Cursor
						}
						b.StopTimer()
						sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
						b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50_us")
						b.ReportMetric(float64(lat[(len(lat)*99)/100].Nanoseconds())/1e3, "p99_us")
					})
				}
				c.Close()
			}
			// codec=raw: a Protobuf client that reads the answer's frame
			// without decoding its members (it counts them): what the
			// server side (gateway, brain, store) costs, without the Go
			// client's 5 allocations per member in the same process.
			rc := dialRaw(b, url, "acme", "asker-raw")
			for _, q := range []string{"count", "page"} {
				b.Run("codec=raw/query="+q, func(b *testing.B) {
					lat := make([]time.Duration, 0, b.N)
					cursor := ""
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						t0 := time.Now()
						a := rc.presence(b, uint64(i+1), "big", q == "count", 1000, cursor)
						lat = append(lat, time.Since(t0))
						if a.count != members || (q == "page" && a.members != 1000) {
							b.Fatalf("count %d, %d members", a.count, a.members)
						}
						cursor = a.cursor
					}
					b.StopTimer()
					sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
					b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50_us")
					b.ReportMetric(float64(lat[(len(lat)*99)/100].Nanoseconds())/1e3, "p99_us")
				})
			}
			rc.conn.Close()
		})
	}
}

// rawClient speaks the Protobuf codec on a bare WebSocket connection.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
}

func dialRaw(tb testing.TB, url, tenant, user string) *rawClient {
	tb.Helper()
	tok, _ := auth.Mint(secret, auth.MintOptions{Tenant: tenant, User: user, TTL: time.Hour})
	d := ws.Dialer{Protocols: []string{"arqon.v1.proto"},
		Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})}
	conn, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, 64<<10)
	}
	rc := &rawClient{conn: conn, br: br}
	rc.frame(tb) // WELCOME
	return rc
}

// frame reads one frame's payload (valid until the next call).
func (rc *rawClient) frame(tb testing.TB) []byte {
	h, err := ws.ReadHeader(rc.br)
	if err != nil {
		tb.Fatal(err)
	}
	if int64(cap(rc.buf)) < h.Length {
		rc.buf = make([]byte, h.Length)
	}
	rc.buf = rc.buf[:h.Length]
	if _, err := io.ReadFull(rc.br, rc.buf); err != nil {
		tb.Fatal(err)
	}
	return rc.buf
}

type rawAnswer struct {
	count, members int
	cursor         string
}

// presence sends a presence query and reads frames up to its answer.
func (rc *rawClient) presence(tb testing.TB, id uint64, subject string, countOnly bool, limit int, cursor string) rawAnswer {
	q, _ := (&pb.ClientFrame{Op: pb.Op_OP_PRESENCE, Id: id, Subject: subject, CountOnly: countOnly,
		Limit: uint32(limit), Cursor: cursor}).MarshalVT()
	if _, err := rc.conn.Write(clientFrame(ws.OpBinary, q)); err != nil {
		tb.Fatal(err)
	}
	for {
		var a rawAnswer
		var fid uint64
		var op pb.Op
		for b := rc.frame(tb); len(b) > 0; {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				tb.Fatal(protowire.ParseError(n))
			}
			b = b[n:]
			switch {
			case typ == protowire.VarintType:
				v, m := protowire.ConsumeVarint(b)
				switch num {
				case 1:
					op = pb.Op(v)
				case 2:
					fid = v
				case 14:
					a.count = int(v)
				}
				n = m
			case num == 13:
				a.members++
				n = protowire.ConsumeFieldValue(num, typ, b)
			case num == 16:
				v, m := protowire.ConsumeBytes(b)
				a.cursor, n = string(v), m
			default:
				n = protowire.ConsumeFieldValue(num, typ, b)
			}
			if n < 0 {
				tb.Fatal(protowire.ParseError(n))
			}
			b = b[n:]
		}
		if fid == id {
			if op != pb.Op_OP_PRESENCE {
				tb.Fatalf("answer op %v", op)
			}
			return a
		}
	}
}

// startPresenceGateway starts a gateway on the spine at natsURL (presence
// on, no brain of its own) and returns its socket URL.
func startPresenceGateway(tb testing.TB, natsURL string) string {
	tb.Helper()
	sp, err := spine.New(spine.Config{URL: natsURL, NodeID: "bench-gw"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sp.Close)
	v, _ := auth.NewVerifier(secret)
	g, err := gateway.New(gateway.Config{Listen: "127.0.0.1:0", NodeID: "bench-gw", Verifier: v, Spine: sp, PublishRate: -1})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := g.Listen()
	if err != nil {
		tb.Fatal(err)
	}
	if err := g.Serve(ln); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	return "ws://" + ln.Addr().String() + gateway.SocketPath
}

// fillSyntheticRoom joins n members to (acme, room) from a synthetic node
// and heartbeats it until the returned stop is called.
func fillSyntheticRoom(tb testing.TB, natsURL, room string, n int) (stop func()) {
	tb.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		tb.Fatal(err)
	}
	const node = "node-synthetic"
	epoch := uint64(time.Now().UnixNano())
	seq := uint64(0)
	for i := 0; i < n; i += 500 {
		seq++
		bt := &pb.PresenceBatch{Node: node, Epoch: epoch, Seq: seq}
		for j := i; j < min(i+500, n); j++ {
			bt.Ops = append(bt.Ops, &pb.PresenceOp{Tenant: "acme", Subject: room, Session: fmt.Sprintf("S%021d", j),
				User: fmt.Sprintf("user-%07d", j), JoinedAt: time.Now().UnixMilli(), Info: []byte(`{"name":"member"}`)})
		}
		data, _ := bt.MarshalVT()
		if err := nc.Publish("arq.$brain.node."+node, data); err != nil {
			tb.Fatal(err)
		}
	}
	hb, _ := (&pb.PresenceBatch{Node: node, Epoch: epoch, Seq: seq, Heartbeat: true, Members: uint32(n)}).MarshalVT()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			_ = nc.Publish("arq.$brain.node."+node, hb)
			select {
			case <-done:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return func() { close(done); <-finished; nc.Close() }
}

// waitCount waits until room has n members.
func waitCount(tb testing.TB, c *client.Client, room string, n int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		a, err := c.Presence(ctx, room, client.PresenceOptions{CountOnly: true})
		cancel()
		if err == nil && a.Count == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("room %s: %v members, err %v", room, a, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
