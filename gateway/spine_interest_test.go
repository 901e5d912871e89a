package gateway

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/spinetest"
	"github.com/arqonbus/arqonbus/spine"
)

// startInterestNode starts a gateway node whose spine joins the NATS at url
// with a short interest heartbeat (the warm-up is 1.5 heartbeats).
func startInterestNode(t *testing.T, url, id string, mode string) *testNode {
	t.Helper()
	sp, err := spine.New(spine.Config{URL: url, NodeID: id, HeartbeatInterval: 100 * time.Millisecond, Interest: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	return startNode(t, sp, func(c *Config) { c.NodeID = id })
}

// Issue 14's interest line: four nodes with disjoint rooms, on a 2-server
// NATS cluster (two nodes on each server), every node
// publishing to every room. Each node's NATS inbound count (its metrics)
// equals the traffic of its own rooms from the other nodes; what nobody
// else listens to never leaves the node that published it; and every
// subscriber receives exactly its room's messages. In tenant mode, the
// same traffic reaches every node.
func TestDisjointRoomsInterest(t *testing.T) {
	for _, mode := range []string{spine.InterestSubject, spine.InterestTenant} {
		t.Run(mode, func(t *testing.T) { disjointRooms(t, mode) })
	}
}

func disjointRooms(t *testing.T, mode string) {
	const nodes, roomsPerNode, perRoom = 4, 3, 25
	cluster := spinetest.NewCluster(t, 2)
	var ns []*testNode
	for i := range nodes {
		ns = append(ns, startInterestNode(t, cluster.URL(i%2), "node-"+strconv.Itoa(i), mode))
	}
	room := func(node, r int) string { return fmt.Sprintf("room.%d.%d", node, r) }
	subs := make([][]*client.Subscription, nodes)
	for i, n := range ns {
		c := dial(t, n, "t1", "sub"+strconv.Itoa(i), client.Protobuf)
		for r := range roomsPerNode {
			s, err := c.Subscribe(ctx(t), room(i, r))
			if err != nil {
				t.Fatal(err)
			}
			subs[i] = append(subs[i], s)
		}
	}
	for _, n := range ns {
		waitFor(t, func() bool {
			return counterValue(t, n, "arq_spine_interest_open") == 1 &&
				counterValue(t, n, "arq_spine_interest_nodes") >= nodes-1
		})
	}
	before := make([][3]float64, nodes)
	metrics := func(n *testNode) [3]float64 {
		return [3]float64{counterValue(t, n, "arq_spine_received_total"), counterValue(t, n, "arq_spine_published_total"), counterValue(t, n, "arq_spine_unheard_total")}
	}
	for i, n := range ns {
		before[i] = metrics(n)
	}
	// Every node publishes perRoom messages to every room, and to a
	// subject nobody reads.
	for i, n := range ns {
		pub := dial(t, n, "t1", "pub"+strconv.Itoa(i), client.Protobuf)
		for k := range perRoom {
			for j := range nodes {
				for r := range roomsPerNode {
					if err := pub.Publish(ctx(t), room(j, r), []byte(strconv.Itoa(i)+"."+strconv.Itoa(k))); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := pub.PublishAck(ctx(t), "nobody.reads", nil, client.PublishOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each room's subscriber gets nodes*perRoom messages, in order per publisher.
	for i := range nodes {
		for r, s := range subs[i] {
			next := make([]int, nodes)
			for range nodes * perRoom {
				m := recv(t, s)
				if m.Subject != room(i, r) {
					t.Fatalf("node %d room %d got %s", i, r, m.Subject)
				}
				var from, k int
				if _, err := fmt.Sscanf(string(m.Data), "%d.%d", &from, &k); err != nil || k != next[from] {
					t.Fatalf("node %d room %d: %q after %v (loss, duplicate or disorder)", i, r, m.Data, next)
				}
				next[from]++
			}
		}
	}
	own := float64((nodes - 1) * roomsPerNode * perRoom) // from the other nodes, to my rooms
	for i, n := range ns {
		waitFor(t, func() bool { return metrics(n)[0]-before[i][0] >= own })
		time.Sleep(50 * time.Millisecond) // anything extra would be right behind
		d := metrics(n)
		recv, pub, unheard := d[0]-before[i][0], d[1]-before[i][1], d[2]-before[i][2]
		switch mode {
		case spine.InterestSubject:
			if recv != own {
				t.Errorf("node %d: %v messages in from NATS, want its own rooms' %v", i, recv, own)
			}
			// Sent: the other nodes' rooms; skipped: its own rooms and nobody.reads.
			if want := float64((nodes - 1) * roomsPerNode * perRoom); pub != want {
				t.Errorf("node %d: published %v to NATS, want %v", i, pub, want)
			}
			if want := float64(roomsPerNode*perRoom + perRoom); unheard != want {
				t.Errorf("node %d: %v publishes skipped, want %v", i, unheard, want)
			}
		case spine.InterestTenant:
			// Every node listens to the whole tenant: all of the others' traffic.
			if want := float64((nodes - 1) * (nodes*roomsPerNode + 1) * perRoom); recv != want {
				t.Errorf("node %d (tenant mode): %v messages in, want %v", i, recv, want)
			}
		}
		t.Logf("node %d (%s): received %v, published %v, skipped %v, NATS subscriptions %v", i, mode, recv, pub, unheard,
			counterValue(t, n, "arq_spine_subscriptions"))
	}
}
