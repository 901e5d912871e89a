package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strconv"
	"testing"
	"time"
)

// sign builds an HS256 token over header (raw JSON) and claims (raw JSON).
func sign(header, claims string) string {
	s := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(s))
	return s + "." + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func sameIdentity(a, b Identity) bool {
	return a.User == b.User && a.Tenant == b.Tenant && a.Role == b.Role &&
		slices.Equal(a.Capabilities, b.Capabilities) && a.ExpiresAt.Equal(b.ExpiresAt)
}

// Tokens Mint writes take the fast path, with the slow path's identity.
func TestFastPathTakesMintedTokens(t *testing.T) {
	v, _ := NewVerifier(secret)
	for _, o := range []MintOptions{
		{Tenant: "acme", User: "u1"},
		{Tenant: "acme_2", User: "ünïcode user", Role: "admin", Capabilities: []string{"pub", "sub"}},
	} {
		tok, err := Mint(secret, o)
		if err != nil {
			t.Fatal(err)
		}
		fast, ok := v.fastVerify(tok, time.Now())
		if !ok {
			t.Fatalf("fast path declined a minted token %+v", o)
		}
		slow, err := v.slowVerify(tok)
		if err != nil || !sameIdentity(fast, slow) {
			t.Fatalf("fast %+v, slow %+v (%v)", fast, slow, err)
		}
	}
}

// Unusual but possibly valid tokens go to the slow path, which decides.
func TestFastPathDeclines(t *testing.T) {
	v, _ := NewVerifier(secret)
	now := time.Now().Unix()
	exp, iat := strconv.FormatInt(now+3600, 10), strconv.FormatInt(now, 10)
	std := `{"alg":"HS256","typ":"JWT"}`
	for name, tc := range map[string]struct{ header, claims string }{
		"other header":      {`{"alg":"HS256"}`, `{"sub":"u","tenant_id":"t","exp":` + exp + `,"iat":` + iat + `}`},
		"duplicate sub":     {std, `{"sub":"u","sub":"v","tenant_id":"t","exp":` + exp + `,"iat":` + iat + `}`},
		"escape":            {std, `{"sub":"\u0075","tenant_id":"t","exp":` + exp + `,"iat":` + iat + `}`},
		"fractional exp":    {std, `{"sub":"u","tenant_id":"t","exp":` + exp + `.5,"iat":` + iat + `}`},
		"exponent exp":      {std, `{"sub":"u","tenant_id":"t","exp":1e12,"iat":` + iat + `}`},
		"aud":               {std, `{"sub":"u","tenant_id":"t","exp":` + exp + `,"iat":` + iat + `,"aud":"x"}`},
		"upper-case key":    {std, `{"SUB":"u","tenant_id":"t","exp":` + exp + `,"iat":` + iat + `}`},
		"no iat":            {std, `{"sub":"u","tenant_id":"t","exp":` + exp + `}`},
		"expired":           {std, `{"sub":"u","tenant_id":"t","exp":` + strconv.FormatInt(now-60, 10) + `,"iat":` + strconv.FormatInt(now-120, 10) + `}`},
		"newline in claims": {std, "{\"sub\":\"u\",\n\"tenant_id\":\"t\",\"exp\":" + exp + ",\"iat\":" + iat + "}"},
	} {
		tok := sign(tc.header, tc.claims)
		if _, ok := v.fastVerify(tok, time.Now()); ok {
			t.Errorf("%s: fast path accepted %s", name, tc.claims)
		}
		slowID, slowErr := v.slowVerify(tok)
		id, err := v.Verify(tok)
		if err != slowErr || !sameIdentity(id, slowID) {
			t.Errorf("%s: Verify = %+v, %v; slow path %+v, %v", name, id, err, slowID, slowErr)
		}
	}
	// A bad signature on a plain token: the slow path names it.
	tok := sign(std, `{"sub":"u","tenant_id":"t","exp":`+exp+`,"iat":`+iat+`}`)
	if _, err := v.Verify(tok[:len(tok)-2] + "AA"); err != ErrBadSignature {
		t.Errorf("tampered signature: %v", err)
	}
}

// Whatever claims a correctly signed token carries, the fast path accepts
// it only if golang-jwt accepts it too, with the same identity.
func FuzzFastPathAgrees(f *testing.F) {
	now := time.Now().Unix()
	exp, iat := strconv.FormatInt(now+3600, 10), strconv.FormatInt(now, 10)
	f.Add(`{"sub":"u","tenant_id":"t","exp":`+exp+`,"iat":`+iat+`}`, false)
	f.Add(`{"tenant_id":"acme","role":"r","capabilities":["a","b"],"sub":"ü","iat":`+iat+`,"nbf":`+iat+`,"exp":`+exp+`}`, true)
	f.Add(`{"sub":"u","tenant_id":"t","exp":`+exp+`,"iat":`+iat+`,"capabilities":[]}`, false)
	f.Add(`{"sub":"u","tenant_id":"t","exp":`+exp+`,"iat":`+iat+`,"capabilities":null}`, false)
	f.Add(`{"sub":"u","tenant_id":"t","exp":-1,"iat":0}`, false)
	f.Add(`{"sub":"u","tenant_id":"t","exp":9007199254740993,"iat":`+iat+`}`, false)
	f.Add(`{"sub":"u","tenant_id":"t","exp":`+exp+`,"iat":`+iat+`} x`, false)
	f.Add(`{"sub":"u","tenant_id":"t","exp":0`+exp+`,"iat":`+iat+`}`, false)
	v, _ := NewVerifier(secret)
	f.Fuzz(func(t *testing.T, claims string, otherOrder bool) {
		header := `{"alg":"HS256","typ":"JWT"}`
		if otherOrder {
			header = `{"typ":"JWT","alg":"HS256"}`
		}
		tok := sign(header, claims)
		at := time.Now()
		fast, ok := v.fastVerify(tok, at)
		if !ok {
			return
		}
		slow, err := v.slowVerify(tok)
		if err != nil {
			t.Fatalf("fast path accepted %s; golang-jwt: %v", claims, err)
		}
		if !sameIdentity(fast, slow) {
			t.Fatalf("claims %s: fast %+v, slow %+v", claims, fast, slow)
		}
	})
}

// BenchmarkVerifySlow: the golang-jwt path alone, for comparison with
// BenchmarkVerify (which takes the fast path for this token).
func BenchmarkVerifySlow(b *testing.B) {
	v, _ := NewVerifier(secret)
	tok, _ := Mint(secret, MintOptions{Tenant: "acme", User: "u1"})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := v.slowVerify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
