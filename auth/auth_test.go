package auth

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestVerify(t *testing.T) {
	v, err := NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good, _ := Mint(secret, MintOptions{Tenant: "acme", User: "u1", Role: "admin", Capabilities: []string{"pub"}})
	id, err := v.Verify(good)
	if err != nil || id.Tenant != "acme" || id.User != "u1" || id.Role != "admin" || len(id.Capabilities) != 1 {
		t.Fatalf("%+v %v", id, err)
	}
	sign := func(m jwt.Claims, method jwt.SigningMethod, key any) string {
		s, err := jwt.NewWithClaims(method, m).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "u", "tenant_id": "t", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims { m := base(); m[k] = v; return m }
	without := func(k string) jwt.MapClaims { m := base(); delete(m, k); return m }
	cases := []struct {
		name string
		tok  string
		err  error
	}{
		{"empty", "", ErrMissingToken},
		{"garbage", "abc", ErrMalformed},
		{"none", sign(base(), jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType), ErrBadAlgorithm},
		{"hs384", sign(base(), jwt.SigningMethodHS384, secret), ErrBadAlgorithm},
		{"wrong key", sign(base(), jwt.SigningMethodHS256, []byte("ffffffffffffffffffffffffffffffffff")), ErrBadSignature},
		{"expired", sign(with("exp", now.Add(-time.Minute).Unix()), jwt.SigningMethodHS256, secret), ErrExpired},
		{"future iat", sign(with("iat", now.Add(time.Hour).Unix()), jwt.SigningMethodHS256, secret), ErrNotYetValid},
		{"no exp", sign(without("exp"), jwt.SigningMethodHS256, secret), ErrClaims},
		{"no iat", sign(without("iat"), jwt.SigningMethodHS256, secret), ErrClaims},
		{"no sub", sign(without("sub"), jwt.SigningMethodHS256, secret), ErrClaims},
		{"no tenant", sign(without("tenant_id"), jwt.SigningMethodHS256, secret), ErrBadTenant},
		{"dotted tenant", sign(with("tenant_id", "a.b"), jwt.SigningMethodHS256, secret), ErrBadTenant},
		{"wildcard tenant", sign(with("tenant_id", "*"), jwt.SigningMethodHS256, secret), ErrBadTenant},
		{"numeric tenant", sign(with("tenant_id", 5), jwt.SigningMethodHS256, secret), ErrMalformed},
	}
	for _, c := range cases {
		if _, err := v.Verify(c.tok); !errors.Is(err, c.err) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.err)
		}
	}
}

func TestShortSecret(t *testing.T) {
	if _, err := NewVerifier([]byte("short")); !errors.Is(err, ErrShortSecret) {
		t.Fatal(err)
	}
	if _, err := Mint([]byte("short"), MintOptions{Tenant: "t", User: "u"}); !errors.Is(err, ErrShortSecret) {
		t.Fatal(err)
	}
}

func TestDevSecret(t *testing.T) {
	p := filepath.Join(t.TempDir(), ".arqon", "dev-secret")
	s1, created, err := LoadOrCreateDevSecret(p)
	if err != nil || !created || len(s1) < MinSecretLen {
		t.Fatalf("%v %v %d", err, created, len(s1))
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	s2, created, err := LoadOrCreateDevSecret(p)
	if err != nil || created || string(s1) != string(s2) {
		t.Fatalf("reuse: %v %v", err, created)
	}
	os.Chmod(p, 0o644)
	if _, _, err := LoadOrCreateDevSecret(p); err == nil {
		t.Fatal("world-readable secret accepted")
	}
}

func FuzzVerify(f *testing.F) {
	good, _ := Mint(secret, MintOptions{Tenant: "acme", User: "u1"})
	f.Add(good)
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v, _ := NewVerifier(secret)
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(tok)
		if err == nil && ValidateTenant(id.Tenant) != nil {
			t.Fatalf("accepted bad tenant %q", id.Tenant)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	v, _ := NewVerifier(secret)
	tok, _ := Mint(secret, MintOptions{Tenant: "acme", User: "u1"})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
