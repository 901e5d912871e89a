package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// The fast path. Verify first tries fastVerify, which accepts only the
// plainest form of a valid token: the standard HS256 header, strict
// base64url, a good signature, and a claims object of known keys (sub,
// tenant_id, role, capabilities, exp, iat, nbf), each once, with the
// expected JSON types, integer times, no escapes and valid UTF-8, and
// times within the same leeway. Anything else, valid or not, goes to
// golang-jwt (the slow path), which decides and names the error. So the
// fast path can only accept what the slow path accepts, with the same
// identity; FuzzFastPathAgrees checks it. It spares a handshake the
// reflection-based JSON decoding of the header and claims (about 4 us and
// 45 allocations per token here).

// Encodings of the two header orders golang-jwt and most issuers write.
var fastHeaders = [...]string{
	base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)),
	base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"HS256"}`)),
}

var strictB64 = base64.RawURLEncoding.Strict()

var fastParsers fastjson.ParserPool

// fastVerifier holds what the fast path reuses.
type fastVerifier struct {
	macs sync.Pool // hash.Hash: HMAC-SHA256 keyed with the secret
}

func (v *Verifier) mac() hash.Hash {
	if h, ok := v.fast.macs.Get().(hash.Hash); ok {
		h.Reset()
		return h
	}
	return hmac.New(sha256.New, v.secret)
}

// fastVerify returns the identity of token and true, or false if the
// slow path must decide.
func (v *Verifier) fastVerify(token string, now time.Time) (Identity, bool) {
	dot1 := strings.IndexByte(token, '.')
	if dot1 < 0 {
		return Identity{}, false
	}
	header := token[:dot1]
	if header != fastHeaders[0] && header != fastHeaders[1] {
		return Identity{}, false
	}
	rest := token[dot1+1:]
	dot2 := strings.IndexByte(rest, '.')
	if dot2 < 0 || strings.IndexByte(rest[dot2+1:], '.') >= 0 {
		return Identity{}, false
	}
	payload, sigText := rest[:dot2], rest[dot2+1:]

	var sig [sha256.Size]byte
	if strictB64.DecodedLen(len(sigText)) != len(sig) {
		return Identity{}, false
	}
	if n, err := strictB64.Decode(sig[:], []byte(sigText)); err != nil || n != len(sig) {
		return Identity{}, false
	}
	h := v.mac()
	h.Write([]byte(token[:dot1+1+dot2]))
	var sum [sha256.Size]byte
	ok := hmac.Equal(h.Sum(sum[:0]), sig[:])
	v.fast.macs.Put(h)
	if !ok {
		return Identity{}, false
	}

	var buf [512]byte
	var claims []byte
	if n := strictB64.DecodedLen(len(payload)); n <= len(buf) {
		claims = buf[:n]
	} else {
		claims = make([]byte, n)
	}
	n, err := strictB64.Decode(claims, []byte(payload))
	if err != nil {
		return Identity{}, false
	}
	claims = claims[:n]
	if !plainJSON(claims) {
		return Identity{}, false
	}
	p := fastParsers.Get()
	defer fastParsers.Put(p)
	val, err := p.ParseBytes(claims)
	if err != nil {
		return Identity{}, false
	}
	obj, err := val.Object()
	if err != nil {
		return Identity{}, false
	}
	var (
		id                Identity
		seen              uint8
		exp, iat, nbf     int64
		hasIat, hasNbf    bool
		bad               bool
		sub, tenant, role string
	)
	const (
		kSub = 1 << iota
		kTenant
		kRole
		kCaps
		kExp
		kIat
		kNbf
	)
	once := func(k uint8) bool {
		if seen&k != 0 {
			return false
		}
		seen |= k
		return true
	}
	str := func(x *fastjson.Value, dst *string) bool {
		b, err := x.StringBytes()
		if err != nil {
			return false
		}
		*dst = string(b)
		return true
	}
	num := func(x *fastjson.Value, dst *int64) bool {
		if x.Type() != fastjson.TypeNumber {
			return false
		}
		i, err := x.Int64()
		if err != nil || i < 0 || i > maxFastTime {
			return false // a fraction, an exponent, or far from now
		}
		*dst = i
		return true
	}
	obj.Visit(func(key []byte, x *fastjson.Value) {
		if bad {
			return
		}
		switch string(key) {
		case "sub":
			bad = !once(kSub) || !str(x, &sub)
		case "tenant_id":
			bad = !once(kTenant) || !str(x, &tenant)
		case "role":
			bad = !once(kRole) || !str(x, &role)
		case "capabilities":
			if bad = !once(kCaps) || x.Type() != fastjson.TypeArray; bad {
				return
			}
			arr, _ := x.Array()
			if len(arr) == 0 {
				// Present but empty: not nil, so it grants nothing
				// (auth.CompileCapabilities), as from the slow path.
				id.Capabilities = []string{}
				return
			}
			caps := make([]string, len(arr))
			for i, e := range arr {
				if !str(e, &caps[i]) {
					bad = true
					return
				}
			}
			id.Capabilities = caps
		case "exp":
			bad = !once(kExp) || !num(x, &exp)
		case "iat":
			bad = !once(kIat) || !num(x, &iat)
			hasIat = true
		case "nbf":
			bad = !once(kNbf) || !num(x, &nbf)
			hasNbf = true
		default:
			bad = true // a claim only the slow path knows how to read
		}
	})
	if bad || seen&kExp == 0 || !hasIat || sub == "" || ValidateTenant(tenant) != nil {
		return Identity{}, false
	}
	// golang-jwt's checks, with its leeway: valid while now < exp + leeway,
	// not before iat - leeway or nbf - leeway.
	expT := time.Unix(exp, 0)
	if !now.Before(expT.Add(v.leeway)) || now.Before(time.Unix(iat, 0).Add(-v.leeway)) ||
		hasNbf && now.Before(time.Unix(nbf, 0).Add(-v.leeway)) {
		return Identity{}, false
	}
	id.User, id.Tenant, id.Role, id.ExpiresAt = sub, tenant, role, expT
	return id, true
}

// maxFastTime bounds the times the fast path reads (about the year 36812):
// golang-jwt goes through float64, exact only up to 2^53.
const maxFastTime = 1 << 40

// plainJSON reports whether b is JSON that encoding/json reads exactly as
// fastjson does: valid UTF-8, no escapes (encoding/json replaces invalid
// surrogates, fastjson keeps them), no control bytes at all, and valid by
// fastjson's strict validator.
func plainJSON(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b) && fastjson.ValidateBytes(b) == nil
}
