package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	p256Key  *ecdsa.PrivateKey
	p384Key  *ecdsa.PrivateKey
	edKey    ed25519.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048)
		rsaKey2, _ = rsa.GenerateKey(rand.Reader, 2048)
		p256Key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		p384Key, _ = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		_, edKey, _ = ed25519.GenerateKey(rand.Reader)
	})
}

// pemFile writes pub as a PKIX PEM file and returns its path and bytes.
func pemFile(t testing.TB, dir, name string, pub any) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func claimsFor(tenant, user string, mod func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"sub": user, "tenant_id": tenant, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if mod != nil {
		mod(c)
	}
	return c
}

// signWith signs claims with alg and key, with kid in the header if set.
func signWith(t testing.TB, alg, kid string, key any, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(allowedAlgsOrNone(alg), c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", alg, err)
	}
	return s
}

func allowedAlgsOrNone(alg string) jwt.SigningMethod {
	if alg == "none" {
		return jwt.SigningMethodNone
	}
	return jwt.GetSigningMethod(alg)
}

// Every asymmetric algorithm verifies with a PEM public key; HS256 keeps
// working beside them.
func TestPEMKeys(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	rsaPath, _ := pemFile(t, dir, "rsa.pem", &rsaKey.PublicKey)
	p256Path, _ := pemFile(t, dir, "p256.pem", &p256Key.PublicKey)
	p384Path, _ := pemFile(t, dir, "p384.pem", &p384Key.PublicKey)
	edPath, _ := pemFile(t, dir, "ed.pem", edKey.Public())
	v, err := NewVerifierConfig(Config{Secret: secret, PublicKeyFiles: []string{rsaPath, p256Path, p384Path, edPath}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, c := range []struct {
		alg string
		key any
	}{
		{"RS256", rsaKey}, {"RS384", rsaKey}, {"RS512", rsaKey},
		{"ES256", p256Key}, {"ES384", p384Key}, {"EdDSA", edKey}, {"HS256", secret},
	} {
		tok := signWith(t, c.alg, "", c.key, claimsFor("acme", "u-"+c.alg, nil))
		id, err := v.Verify(tok)
		if err != nil || id.User != "u-"+c.alg || id.Tenant != "acme" {
			t.Errorf("%s: %+v %v", c.alg, id, err)
		}
	}
	// A key the verifier does not hold.
	tok := signWith(t, "RS256", "", rsaKey2, claimsFor("acme", "u", nil))
	if _, err := v.Verify(tok); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other RSA key: %v", err)
	}
	// ES384 signed with a P-256 key: no P-256 key fits ES384 (jwt refuses to sign it; forge the header).
	tok = signWith(t, "ES256", "", p256Key, claimsFor("acme", "u", nil))
	if _, err := v.Verify(swapAlg(t, tok, "ES384")); !errors.Is(err, ErrBadSignature) {
		t.Errorf("ES384 header on an ES256 signature: %v", err)
	}
	// Expiry and the other claim checks apply to every algorithm.
	tok = signWith(t, "EdDSA", "", edKey, claimsFor("acme", "u", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }))
	if _, err := v.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Errorf("expired EdDSA: %v", err)
	}
}

// swapAlg rewrites a token's header alg (its signature is kept).
func swapAlg(t testing.TB, tok, alg string) string {
	t.Helper()
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"JWT"}`))
	for i := range tok {
		if tok[i] == '.' {
			return h + tok[i:]
		}
	}
	t.Fatal("not a JWT")
	return ""
}

func TestWeakOrBadKeys(t *testing.T) {
	dir := t.TempDir()
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p, _ := pemFile(t, dir, "small.pem", &small.PublicKey)
	if _, err := NewVerifierConfig(Config{PublicKeyFiles: []string{p}}); err == nil {
		t.Error("1024-bit RSA key accepted")
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := NewVerifierConfig(Config{PublicKeyFiles: []string{bad}}); err == nil {
		t.Error("garbage PEM accepted")
	}
	if _, err := NewVerifierConfig(Config{}); !errors.Is(err, ErrNoKeys) {
		t.Errorf("no keys: %v", err)
	}
	if _, err := NewVerifierConfig(Config{JWKSURLs: []string{"http://idp.example/jwks"}}); err == nil {
		t.Error("http:// JWKS URL accepted")
	}
}

// Algorithm confusion: each classic attack is refused.
func TestAlgorithmConfusion(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	rsaPath, rsaPEM := pemFile(t, dir, "rsa.pem", &rsaKey.PublicKey)
	c := claimsFor("acme", "mallory", nil)

	// 1. The RS256 public key (its PEM text, or its DER) used as an HS256 secret.
	onlyRSA, err := NewVerifierConfig(Config{PublicKeyFiles: []string{rsaPath}})
	if err != nil {
		t.Fatal(err)
	}
	withSecret, err := NewVerifierConfig(Config{Secret: secret, PublicKeyFiles: []string{rsaPath}})
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	for _, hmacKey := range [][]byte{rsaPEM, der} {
		forged := signWith(t, "HS256", "", hmacKey, c)
		if _, err := onlyRSA.Verify(forged); !errors.Is(err, ErrBadAlgorithm) {
			t.Errorf("HS256 with the RSA public key, verifier without secret: %v", err)
		}
		if _, err := withSecret.Verify(forged); !errors.Is(err, ErrBadSignature) {
			t.Errorf("HS256 with the RSA public key, verifier with a secret: %v", err)
		}
	}

	// 2. alg "none", with and without a kid, and unknown algorithms.
	none := signWith(t, "none", "", jwt.UnsafeAllowNoneSignatureType, c)
	noneKid := signWith(t, "none", "k1", jwt.UnsafeAllowNoneSignatureType, c)
	for _, v := range []*Verifier{onlyRSA, withSecret} {
		for _, tok := range []string{none, noneKid, swapAlg(t, none, "NONE"), swapAlg(t, signWith(t, "RS256", "", rsaKey, c), "PS256")} {
			if _, err := v.Verify(tok); !errors.Is(err, ErrBadAlgorithm) {
				t.Errorf("%.40s...: %v", tok, err)
			}
		}
	}

	// 3. A kid that names a key of another type: the JWKS holds kid "ec"
	// (a P-256 key) and kid "rsa"; a token signed RS256 naming kid "ec" is
	// refused, as is ES256 naming "rsa" and an RS512 token on a key the
	// JWKS restricts to RS256.
	srv := jwksServer(t)
	srv.set(jwkOf(t, "ec", "", &p256Key.PublicKey), jwkOf(t, "rsa", "RS256", &rsaKey.PublicKey))
	v, err := NewVerifierConfig(Config{JWKSURLs: []string{srv.URL}, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Verify(signWith(t, "RS256", "rsa", rsaKey, c)); err != nil {
		t.Fatalf("good RS256 token: %v", err)
	}
	if _, err := v.Verify(signWith(t, "ES256", "ec", p256Key, c)); err != nil {
		t.Fatalf("good ES256 token: %v", err)
	}
	for name, tok := range map[string]string{
		"RS256 naming an EC key":             signWith(t, "RS256", "ec", rsaKey, c),
		"ES256 naming an RSA key":            signWith(t, "ES256", "rsa", p256Key, c),
		"RS512 on a key restricted to RS256": signWith(t, "RS512", "rsa", rsaKey, c),
		"HS256 naming the RSA key":           signWith(t, "HS256", "rsa", rsaPEM, c),
	} {
		if _, err := v.Verify(tok); !errors.Is(err, ErrBadAlgorithm) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A JWKS never supplies HMAC secrets: an "oct" key is skipped.
	srv.set(map[string]any{"kty": "oct", "kid": "sym", "k": base64.RawURLEncoding.EncodeToString(secret)})
	v2, err := NewVerifierConfig(Config{JWKSURLs: []string{srv.URL}, HTTPClient: srv.Client(), JWKSMinRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if _, err := v2.Verify(signWith(t, "HS256", "sym", secret, c)); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("HS256 with a JWKS oct key: %v", err)
	}
}

// Issuers, audiences and tenant pins; several issuers at once.
func TestIssuersAudiencesTenants(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	rsaPath, _ := pemFile(t, dir, "a.pem", &rsaKey.PublicKey)
	edPath, _ := pemFile(t, dir, "b.pem", edKey.Public())
	v, err := NewVerifierConfig(Config{
		Secret:    secret,
		Issuers:   []string{"https://ours.example/"},
		Audiences: []string{"arqonbus"},
		Providers: []Provider{
			{Issuer: "https://idp-a.example/", PublicKeyFiles: []string{rsaPath}, Audiences: []string{"bus-a", "bus"}, Tenants: []string{"acme"}},
			{Issuer: "https://idp-b.example/", PublicKeyFiles: []string{edPath}, Tenants: []string{"beta", "gamma"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok := func(alg string, key any, mod func(jwt.MapClaims)) string {
		return signWith(t, alg, "", key, claimsFor("acme", "u", mod))
	}
	iss := func(s string) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c["iss"] = s } }
	and := func(fs ...func(jwt.MapClaims)) func(jwt.MapClaims) {
		return func(c jwt.MapClaims) {
			for _, f := range fs {
				f(c)
			}
		}
	}
	aud := func(a any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c["aud"] = a } }
	tenant := func(s string) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c["tenant_id"] = s } }
	for _, c := range []struct {
		name string
		tok  string
		err  error
	}{
		{"ours", tok("HS256", secret, and(iss("https://ours.example/"), aud("arqonbus"))), nil},
		{"ours, aud list", tok("HS256", secret, and(iss("https://ours.example/"), aud([]string{"x", "arqonbus"}))), nil},
		{"ours, no iss", tok("HS256", secret, aud("arqonbus")), ErrBadIssuer},
		{"ours, no aud", tok("HS256", secret, iss("https://ours.example/")), ErrBadAudience},
		{"ours, other aud", tok("HS256", secret, and(iss("https://ours.example/"), aud("other"))), ErrBadAudience},
		{"unknown issuer", tok("HS256", secret, and(iss("https://evil.example/"), aud("arqonbus"))), ErrBadIssuer},
		{"idp-a", tok("RS256", rsaKey, and(iss("https://idp-a.example/"), aud("bus"))), nil},
		{"idp-a, other tenant", tok("RS256", rsaKey, and(iss("https://idp-a.example/"), aud("bus"), tenant("beta"))), ErrTenantNotAllowed},
		{"idp-a, no aud", tok("RS256", rsaKey, iss("https://idp-a.example/")), ErrBadAudience},
		{"idp-a signed with our secret", tok("HS256", secret, and(iss("https://idp-a.example/"), aud("bus"))), ErrBadAlgorithm},
		{"idp-a signed with idp-b's key", tok("EdDSA", edKey, and(iss("https://idp-a.example/"), aud("bus"))), ErrBadAlgorithm},
		{"idp-b", tok("EdDSA", edKey, and(iss("https://idp-b.example/"), tenant("gamma"))), nil},
		{"idp-b for acme", tok("EdDSA", edKey, iss("https://idp-b.example/")), ErrTenantNotAllowed},
		{"ours signed with idp-a's key", tok("RS256", rsaKey, and(iss("https://ours.example/"), aud("arqonbus"))), ErrBadAlgorithm},
	} {
		id, err := v.Verify(c.tok)
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.err)
		}
		if err == nil && id.Issuer == "" {
			t.Errorf("%s: no issuer in identity", c.name)
		}
	}
	// A verifier with iss or aud checks never lets the fast path skip them.
	if v.fastOK {
		t.Error("fast path on with issuer checks")
	}
	plain, _ := Mint(secret, MintOptions{Tenant: "acme", User: "u"})
	if _, err := v.Verify(plain); !errors.Is(err, ErrBadIssuer) {
		t.Errorf("plain HS256 token: %v", err)
	}
}

// jwksTestServer is an HTTPS JWKS endpoint whose key set can change.
type jwksTestServer struct {
	*httptest.Server
	mu   sync.Mutex
	keys []any
	hits atomic.Int64
	down atomic.Bool // answer 500
}

func jwksServer(t testing.TB) *jwksTestServer {
	s := &jwksTestServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		s.mu.Lock()
		b, _ := json.Marshal(map[string]any{"keys": s.keys})
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksTestServer) set(keys ...any) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwkOf is the JWK of a public key.
func jwkOf(t testing.TB, kid, alg string, pub any) map[string]any {
	t.Helper()
	m := map[string]any{"kid": kid, "use": "sig"}
	if alg != "" {
		m["alg"] = alg
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", b64(k.N.Bytes()), b64(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		point, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			t.Fatal(err)
		}
		m["kty"], m["crv"] = "EC", k.Curve.Params().Name
		m["x"], m["y"] = b64(point[1:1+size]), b64(point[1+size:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", b64(k)
	default:
		t.Fatalf("jwk of %T", pub)
	}
	return m
}

// A real HTTPS JWKS endpoint rotates its keys: a new key is accepted as
// soon as a token names it (no restart), and tokens of a removed key are
// refused after the next refresh.
func TestJWKSRotation(t *testing.T) {
	testKeys(t)
	srv := jwksServer(t)
	srv.set(jwkOf(t, "k1", "RS256", &rsaKey.PublicKey))
	v, err := NewVerifierConfig(Config{
		JWKSURLs: []string{srv.URL}, HTTPClient: srv.Client(), Issuers: []string{"https://idp.example/"},
		JWKSRefresh: 150 * time.Millisecond, JWKSMinRefresh: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := claimsFor("acme", "u", func(c jwt.MapClaims) { c["iss"] = "https://idp.example/" })
	old := signWith(t, "RS256", "k1", rsaKey, c)
	if _, err := v.Verify(old); err != nil {
		t.Fatalf("k1: %v", err)
	}
	// Rotation: the provider publishes k2 (EdDSA) and k3 (ES256) beside k1.
	srv.set(jwkOf(t, "k1", "RS256", &rsaKey.PublicKey), jwkOf(t, "k2", "", edKey.Public()), jwkOf(t, "k3", "ES256", &p256Key.PublicKey))
	time.Sleep(20 * time.Millisecond) // past JWKSMinRefresh since the last fetch
	for _, tok := range []string{signWith(t, "EdDSA", "k2", edKey, c), signWith(t, "ES256", "k3", p256Key, c)} {
		if _, err := v.Verify(tok); err != nil {
			t.Fatalf("new key: %v", err)
		}
	}
	// k1 removed: the scheduled refresh drops it.
	srv.set(jwkOf(t, "k2", "", edKey.Public()))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := v.Verify(old)
		if errors.Is(err, ErrUnknownKey) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token of the removed key: %v after 5 s", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := v.Verify(signWith(t, "EdDSA", "k2", edKey, c)); err != nil {
		t.Fatalf("k2 after k1's removal: %v", err)
	}
	// A key under a kid that was never published.
	if _, err := v.Verify(signWith(t, "RS256", "nope", rsaKey2, c)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown kid: %v", err)
	}
	// A provider that fails keeps the keys it had.
	srv.down.Store(true)
	hits := srv.hits.Load()
	time.Sleep(400 * time.Millisecond)
	if srv.hits.Load() == hits {
		t.Fatal("no scheduled refresh in 400 ms")
	}
	if _, err := v.Verify(signWith(t, "EdDSA", "k2", edKey, c)); err != nil {
		t.Fatalf("k2 while the provider fails: %v", err)
	}
}

// A flood of tokens with made-up kids costs the provider at most one
// request per JWKSMinRefresh.
func TestJWKSRefreshBounded(t *testing.T) {
	testKeys(t)
	srv := jwksServer(t)
	srv.set(jwkOf(t, "k1", "RS256", &rsaKey.PublicKey))
	v, err := NewVerifierConfig(Config{JWKSURLs: []string{srv.URL}, HTTPClient: srv.Client(), JWKSMinRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var wg sync.WaitGroup
	var unknown atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 250; i++ {
				tok := signWith(t, "RS256", fmt.Sprintf("bogus-%d-%d", w, i), rsaKey, claimsFor("acme", "u", nil))
				if _, err := v.Verify(tok); errors.Is(err, ErrUnknownKey) {
					unknown.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	// The refresh at start, then at most one more (the first unknown kid: the
	// start fetch is "old" only after JWKSMinRefresh, so none here).
	if h := srv.hits.Load(); h > 2 {
		t.Fatalf("%d JWKS requests for 2000 unknown kids", h)
	}
	if unknown.Load() != 2000 {
		t.Fatalf("%d of 2000 refused as unknown keys", unknown.Load())
	}
	if v.JWKSFetches() != srv.hits.Load() {
		t.Fatalf("JWKSFetches %d, server saw %d", v.JWKSFetches(), srv.hits.Load())
	}
}

// The verify cost of each algorithm per handshake (the rest of the
// handshake is the same for all): compare with BenchmarkVerify (HS256,
// fast path).
func benchmarkAlg(b *testing.B, alg string, key any, pub any) {
	testKeys(b)
	p, _ := pemFile(b, b.TempDir(), "k.pem", pub)
	v, err := NewVerifierConfig(Config{PublicKeyFiles: []string{p}})
	if err != nil {
		b.Fatal(err)
	}
	tok := signWith(b, alg, "", key, claimsFor("acme", "u1", nil))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyRS256(b *testing.B) {
	testKeys(b)
	benchmarkAlg(b, "RS256", rsaKey, &rsaKey.PublicKey)
}
func BenchmarkVerifyES256(b *testing.B) {
	testKeys(b)
	benchmarkAlg(b, "ES256", p256Key, &p256Key.PublicKey)
}
func BenchmarkVerifyEdDSA(b *testing.B) {
	testKeys(b)
	benchmarkAlg(b, "EdDSA", edKey, edKey.Public())
}

// BenchmarkVerifyJWKS: RS256 with the key found by kid in a JWKS of three.
func BenchmarkVerifyJWKS(b *testing.B) {
	testKeys(b)
	srv := jwksServer(b)
	srv.set(jwkOf(b, "a", "", &p256Key.PublicKey), jwkOf(b, "b", "", edKey.Public()), jwkOf(b, "k", "RS256", &rsaKey.PublicKey))
	v, err := NewVerifierConfig(Config{JWKSURLs: []string{srv.URL}, HTTPClient: srv.Client()})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	tok := signWith(b, "RS256", "k", rsaKey, claimsFor("acme", "u1", nil))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
