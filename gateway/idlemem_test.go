package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// TestIdleConnectionHeap holds subscribed idle connections and checks the
// live heap each one costs, client socket included: no read buffer (netpoll
// would keep a 16 KiB node), no output node (we write with writev) and no
// write-slot table (third_party/netpoll patch) may stay behind.
func TestIdleConnectionHeap(t *testing.T) {
	const conns = 1000
	n := startNode(t, nil, nil)
	tok := token(t, "acme", "u")
	open := func(i int) net.Conn {
		d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok}})}
		c, br, _, err := d.Dial(context.Background(), n.url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(frame(true, ws.OpText, []byte(fmt.Sprintf(`{"op":"sub","id":1,"subject":"idle.%d"}`, i)))); err != nil {
			t.Fatal(err)
		}
		// Read WELCOME and the ACK, so that nothing is in flight.
		var r io.Reader = c
		if br != nil {
			r = io.MultiReader(br, c)
		}
		for _, want := range []string{`"op":"welcome"`, `"op":"ack"`} {
			h, err := ws.ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(r, p); err != nil || !strings.Contains(string(p), want) {
				t.Fatalf("got %q (%v), want %s", p, err, want)
			}
		}
		if br != nil {
			ws.PutReader(br)
		}
		return c
	}
	// Warm up: pools, caches and the first connection's one-off costs.
	for i := 0; i < 50; i++ {
		open(-1 - i).Close()
	}
	waitFor(t, func() bool { return n.gw.reg.count() == 0 })
	before := liveHeap()
	cs := make([]net.Conn, conns)
	for i := range cs {
		cs[i] = open(i)
	}
	if got := n.gw.router.Count(); got != conns {
		t.Fatalf("%d subscriptions, want %d", got, conns)
	}
	per := (int(liveHeap()) - int(before)) / conns
	t.Logf("live heap per idle subscribed connection (server and client side): %d B", per)
	if per > 2560 && !raceEnabled { // the race detector's shadow state inflates the heap
		t.Errorf("an idle connection costs %d B of live heap, over 2560", per)
	}
	for _, c := range cs {
		c.Close()
	}
}

func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
