package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/testcert"
)

// writeTestCert writes a CA-signed certificate for 127.0.0.1 and its key
// as PEM files in dir and returns a pool trusting the CA.
func writeTestCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	p, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, string(p.CertPEM))
	writeFile(t, keyFile, string(p.KeyPEM))
	return certFile, keyFile, p.Pool
}

// TestServeWSS: [server] tls_cert / tls_key make arq serve speak wss://;
// a client trusting the test CA exchanges messages; a bad certificate path
// refuses to start with a clear error.
func TestServeWSS(t *testing.T) {
	bin := buildArq(t)
	dir := t.TempDir()
	certFile, keyFile, pool := writeTestCert(t, dir)
	cfg := filepath.Join(dir, "tls.toml")
	writeFile(t, cfg, "[server]\ntls_cert = \""+certFile+"\"\ntls_key = \""+keyFile+"\"\n")
	s := startServe(t, bin, dir, "--config", cfg)
	if !strings.HasPrefix(s.wsURL, "wss://") {
		t.Fatalf("arq serve prints %s, not a wss:// URL", s.wsURL)
	}
	secret, err := auth.ReadSecret(filepath.Join(dir, auth.DevSecretPath))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := auth.Mint(secret, auth.MintOptions{Tenant: "dev", User: "tls", TTL: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: s.wsURL, Token: tok, TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, "secure.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PublishAck(ctx, "secure.1", []byte("over TLS"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.C:
		if string(m.Data) != "over TLS" {
			t.Fatalf("got %q", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("no message over wss")
	}

	bad := filepath.Join(dir, "bad.toml")
	writeFile(t, bad, "[server]\ntls_cert = \""+filepath.Join(dir, "missing.crt")+"\"\ntls_key = \""+keyFile+"\"\n")
	out, err := exec.Command(bin, "serve", "--config", bad, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "server.tls_cert / tls_key") || !strings.Contains(string(out), "missing.crt") {
		t.Fatalf("a missing certificate: err %v, output %s", err, out)
	}
}
