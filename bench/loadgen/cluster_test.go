package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseNodeSubs(t *testing.T) {
	got, err := parseNodeSubs("", 3, 1000)
	if err != nil || len(got) != 3 || got[0] != 1000 || got[2] != 1000 {
		t.Fatalf("default = %v, %v", got, err)
	}
	got, err = parseNodeSubs(" 0, 10 ", 2, 5)
	if err != nil || len(got) != 2 || got[0] != 0 || got[1] != 10 {
		t.Fatalf("0,10 = %v, %v", got, err)
	}
	for _, bad := range []string{"1,2", "1,2,3,4", "1,x,3", "1,-1,3", "0,0,0", "1,,3"} {
		if _, err := parseNodeSubs(bad, 3, 1); err == nil {
			t.Errorf("parseNodeSubs(%q) accepted", bad)
		}
	}
}

func TestNATSServerOptions(t *testing.T) {
	// A plain WebSocket listener (the single-server -target nats).
	o, remotes, err := natsServerOptions("127.0.0.1:8081", natsNodeOpts{})
	if err != nil || remotes != 0 || o.Websocket.Port != 8081 || o.Cluster.Port != 0 || len(o.Users) != 0 {
		t.Fatalf("ws only: %+v %d %v", o.Websocket, remotes, err)
	}
	// A cluster member: its own route address is skipped.
	dir := t.TempDir()
	for _, f := range []string{natsGatewayPassFile, natsBrainPassFile} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("pw-"+f+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o, remotes, err = natsServerOptions("", natsNodeOpts{
		Listen: "127.0.0.1:4222", Cluster: "127.0.0.1:6222", Name: "n0", AuthDir: dir,
		Routes: "127.0.0.1:6222, 127.0.0.1:6223,127.0.0.1:6224",
	})
	if err != nil {
		t.Fatal(err)
	}
	if remotes != 2 || len(o.Routes) != 2 || o.Routes[0].Host != "127.0.0.1:6223" || o.Routes[1].Host != "127.0.0.1:6224" {
		t.Fatalf("routes %v, remotes %d", o.Routes, remotes)
	}
	if o.Port != 4222 || o.Cluster.Port != 6222 || o.ServerName != "n0" || o.Websocket.Port != 0 {
		t.Fatalf("ports: client %d cluster %d ws %d name %q", o.Port, o.Cluster.Port, o.Websocket.Port, o.ServerName)
	}
	if len(o.Users) != 2 || o.Users[0].Username != "gateway" || o.Users[0].Password != "pw-"+natsGatewayPassFile ||
		o.Users[0].Account.Name != "BUS" || o.SystemAccount != "SYSTEM" {
		t.Fatalf("users %+v", o.Users)
	}
	if p := o.Users[1].Permissions.Publish.Allow; len(p) != 3 || p[0] != "arq.$brain.>" {
		t.Fatalf("brain permissions %v", p)
	}
	// Loopback only, and a missing password file is an error.
	for _, bad := range []natsNodeOpts{{Listen: "10.0.0.1:4222"}, {Listen: "127.0.0.1:x"},
		{Listen: "127.0.0.1:4222", Cluster: "127.0.0.1:6222", Routes: "example.com:6223"},
		{Listen: "127.0.0.1:4222", AuthDir: t.TempDir()}} {
		if _, _, err := natsServerOptions("", bad); err == nil {
			t.Errorf("natsServerOptions(%+v) accepted", bad)
		}
	}
}

func TestMergeSnap(t *testing.T) {
	var a, b Hist
	a.Record(100 * time.Microsecond)
	b.Record(300 * time.Microsecond)
	b.Record(900 * time.Microsecond)
	sa, sb := a.Snapshot(), b.Snapshot()
	m := mergeSnap(nil, sa)
	m = mergeSnap(m, sb)
	if m.n != 3 || m.Quantile(0.5) < 290*time.Microsecond || m.Quantile(0.5) > 310*time.Microsecond ||
		time.Duration(m.max) < 890*time.Microsecond {
		t.Fatalf("merged n %d p50 %v max %v", m.n, m.Quantile(0.5), time.Duration(m.max))
	}
	if sa.n != 1 { // the first snapshot is copied, not modified
		t.Fatalf("mergeSnap modified its first argument: n %d", sa.n)
	}
}
