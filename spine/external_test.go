package spine

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/arqonbus/arqonbus/internal/testcert"
	"github.com/arqonbus/arqonbus/pb"
)

// An external NATS that speaks TLS only and knows the gateways by nkey:
// two nodes with the nkey seed file and the CA file exchange a message;
// a node without the CA file, or without credentials, is refused.
func TestExternalNATSWithTLSAndNKey(t *testing.T) {
	pair, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	dir := t.TempDir()
	seedFile, caFile := filepath.Join(dir, "gateway.nk"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pair.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair.Cert}, MinVersion: tls.VersionTLS12},
		Nkeys: []*server.NkeyUser{{Nkey: pub, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"arq.>", "_INBOX.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"arq.>", "_INBOX.>"}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	url := "tls://" + ns.Addr().String()
	exchange(t, Config{URL: url, NKeySeedFile: seedFile, CAFile: caFile})

	// Refused: no CA file (the server's certificate is not trusted), no
	// credentials. New keeps retrying in the background; it never connects.
	for name, cfg := range map[string]Config{
		"no CA":          {URL: url, NodeID: "c", NKeySeedFile: seedFile},
		"no credentials": {URL: url, NodeID: "d", CAFile: caFile},
	} {
		s, err := New(cfg)
		if err != nil {
			continue // refused outright is fine too
		}
		time.Sleep(300 * time.Millisecond)
		if s.Ready() {
			t.Errorf("%s: connected", name)
		}
		s.Close()
	}
	if _, err := New(Config{URL: url, NodeID: "e", NKeySeedFile: filepath.Join(dir, "missing.nk")}); err == nil {
		t.Error("a missing seed file was accepted")
	}
}

// An external NATS in operator mode (JWTs): a node with a creds file (the
// user's JWT and nkey seed) signed for the bus's subjects connects and
// exchanges a message with another; a node without it is refused.
func TestExternalNATSWithCredsFile(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	if _, err := oc.Encode(okp); err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Pub.Allow.Add("arq.>", "_INBOX.>")
	uc.Sub.Allow.Add("arq.>", "_INBOX.>")
	ujwt, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(t.TempDir(), "gateway.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: resolver,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	url := ns.ClientURL()
	exchange(t, Config{URL: url, CredsFile: credsFile})
	if s, err := New(Config{URL: url, NodeID: "c"}); err == nil {
		time.Sleep(300 * time.Millisecond)
		if s.Ready() {
			t.Error("a node without the creds file connected")
		}
		s.Close()
	}
	if _, err := New(Config{URL: url, NodeID: "d", CredsFile: filepath.Join(t.TempDir(), "missing.creds")}); err == nil {
		t.Error("a missing creds file was accepted")
	}
}

// exchange starts two nodes with cfg (NodeID a and b) and checks that a
// message one publishes reaches the other.
func exchange(t *testing.T, cfg Config) {
	t.Helper()
	node := func(id string) *Spine {
		c := cfg
		c.NodeID, c.HeartbeatInterval = id, testBeat
		s, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		waitFor(t, id+" connected", s.Ready)
		return s
	}
	a, b := node("a"), node("b")
	got := make(chan string, 1)
	b.SetHandler(func(env *pb.Envelope) { got <- string(env.Payload) })
	if err := b.Watch("t1", "x"); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, a)
	if err := a.Publish(&pb.Envelope{Tenant: "t1", Subject: "x", Payload: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "hello" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message did not arrive")
	}
}
