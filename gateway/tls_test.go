package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/testcert"
)

// testCA returns a certificate for 127.0.0.1 signed by a fresh CA, and a
// pool holding that CA.
func testCA(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	p, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	return p.Cert, p.Pool
}

// TestServeTLS: a client connects over wss:// with a private CA and
// exchanges messages with a plain ws:// client; a client that does not
// trust the certificate gets no connection; a TLS handshake failure is
// counted.
func TestServeTLS(t *testing.T) {
	cert, pool := testCA(t)
	v, err := auth.NewVerifier(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	gw, err := New(Config{Listen: "127.0.0.1:0", Verifier: v, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := gw.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(ctx)
	}()
	wss := "wss://" + gw.TLSAddr().String() + SocketPath
	ws := "ws://" + gw.Addr().String() + SocketPath
	tok, _ := auth.Mint(testSecret, auth.MintOptions{Tenant: "t1", User: "u", TTL: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sec, err := client.Dial(ctx, client.Options{URL: wss, Token: tok, TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer sec.Close()
	plain, err := client.Dial(ctx, client.Options{URL: ws, Token: tok, Codec: client.JSON})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	s, err := sec.Subscribe(ctx, "room.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.PublishAck(ctx, "room.1", []byte("to the TLS client"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-s.C:
		if string(m.Data) != "to the TLS client" {
			t.Fatalf("got %q", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("nothing over wss")
	}
	ps, err := plain.Subscribe(ctx, "back.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := sec.PublishAck(ctx, "back.1", []byte("from the TLS client"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ps.C:
		if string(m.Data) != "from the TLS client" {
			t.Fatalf("got %q", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("nothing from wss")
	}

	// A client without the CA: refused by its own TLS check; the
	// server counts the failed handshake.
	if c, err := client.Dial(ctx, client.Options{URL: wss, Token: tok, DialTimeout: 3 * time.Second}); err == nil {
		c.Close()
		t.Fatal("a client that does not trust the certificate connected")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if counterWithLabel(t, reg, "arq_handshake_failures_total", "reason", "tls") >= 1 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the failed TLS handshake was not counted")
}

func counterWithLabel(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
