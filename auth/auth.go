// Package auth verifies and mints the JWTs that clients present at the
// WebSocket upgrade.
//
// Tokens are HS256 (a shared secret; a fast path in fast.go), or RS256/384/512,
// ES256/384 and EdDSA from identity providers, with public keys from PEM
// files or a JWKS URL (jwks.go), optionally per issuer with iss, aud and
// tenant checks (NewVerifierConfig). Claims: sub (user), tenant_id, exp, iat,
// with role and capabilities carried along (the gateway enforces
// capabilities). The tenant comes only from a verified token and must be a
// single subject token, so it can prefix NATS subjects and storage keys
// safely. Errors are the sentinels below, for errors.Is.
package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Reasons a token is refused. Each is a short text fit for a 401 body.
var (
	ErrMissingToken = errors.New("auth: missing token")
	ErrMalformed    = errors.New("auth: malformed token")
	ErrBadSignature = errors.New("auth: bad signature")
	ErrBadAlgorithm = errors.New("auth: algorithm not allowed")
	ErrExpired      = errors.New("auth: token expired")
	ErrNotYetValid  = errors.New("auth: token not valid yet")
	ErrClaims       = errors.New("auth: missing or invalid claims")
	ErrBadTenant    = errors.New("auth: invalid tenant_id")
	ErrShortSecret  = errors.New("auth: secret shorter than 32 bytes")
	// ErrUnknownKey: the token's kid names no key of its issuer (after a
	// JWKS refresh, when one was allowed).
	ErrUnknownKey = errors.New("auth: unknown signing key")
	// ErrBadIssuer: iss names no configured issuer.
	ErrBadIssuer = errors.New("auth: issuer not accepted")
	// ErrBadAudience: aud names none of the issuer's audiences.
	ErrBadAudience = errors.New("auth: audience not accepted")
	// ErrTenantNotAllowed: the issuer may not issue tokens for this tenant.
	ErrTenantNotAllowed = errors.New("auth: tenant not allowed for this issuer")
	// ErrNoKeys: a Config with no secret, key file or JWKS URL.
	ErrNoKeys = errors.New("auth: no secret, public key or JWKS URL configured")
)

// MinSecretLen is the shortest HS256 secret accepted.
const MinSecretLen = 32

// MaxTenantLen bounds tenant_id.
const MaxTenantLen = 64

// Claims are the claims ArqonBus reads from a token.
type Claims struct {
	TenantID     string   `json:"tenant_id"`
	Role         string   `json:"role,omitempty"`
	Capabilities []string `json:"capabilities,omitzero"` // [] is kept: it grants nothing
	jwt.RegisteredClaims
}

// Identity is who a verified token says the client is.
type Identity struct {
	User         string
	Tenant       string
	Issuer       string // the iss claim ("" for tokens without one)
	Role         string
	Capabilities []string
	ExpiresAt    time.Time
	// Grants are Capabilities compiled (CompileCapabilities) by whoever
	// enforces them: the gateway does it once at the upgrade. Verify
	// leaves it nil.
	Grants *Grants
}

// Verifier checks tokens. Safe for concurrent use. A Verifier with JWKS
// URLs refreshes them in the background until Close.
type Verifier struct {
	secret []byte // the default issuer's HS256 secret (the fast path's)
	parser *jwt.Parser
	leeway time.Duration
	fast   fastVerifier
	// fastOK: the fast path may decide (the default issuer has a secret
	// and checks neither iss nor aud; the fast path takes only tokens
	// without iss and aud, which go to the default issuer).
	fastOK bool

	def       *provider   // the top-level keys; nil without any
	providers []*provider // [[auth.provider]] entries, matched by iss first
	sources   []*jwksSource
	stop      chan struct{}
	closeOnce sync.Once
}

// Provider is one identity provider: the iss its tokens carry, the keys it
// signs with, and what it may issue.
type Provider struct {
	// Issuer is the iss claim of its tokens (required).
	Issuer string
	// Secret is an HS256 secret (at least MinSecretLen bytes), if it signs
	// with one.
	Secret []byte
	// PublicKeyFiles are PEM files of RSA, ECDSA (P-256, P-384) or Ed25519
	// public keys.
	PublicKeyFiles []string
	// JWKSURLs are https:// URLs of JWK Sets.
	JWKSURLs []string
	// Audiences: when set, the token's aud must name one of them.
	Audiences []string
	// Tenants: when set, the token's tenant_id must be one of them.
	Tenants []string
}

// Config configures NewVerifierConfig. The top-level keys form the default
// issuer, which takes tokens whose iss is in Issuers (any iss, or none,
// when Issuers is empty) and not claimed by one of Providers.
type Config struct {
	// Secret is the HS256 secret (at least MinSecretLen bytes).
	Secret []byte
	// PublicKeyFiles: PEM public keys (RSA >= 2048 bits, ECDSA P-256/P-384,
	// Ed25519).
	PublicKeyFiles []string
	// JWKSURLs: https:// URLs of JWK Sets.
	JWKSURLs []string
	// Issuers: when set, the iss values the keys above accept.
	Issuers []string
	// Audiences: when set, aud must name one of them.
	Audiences []string
	// Providers are further issuers, each with its own keys.
	Providers []Provider
	// HTTPClient fetches JWKS URLs; default http.DefaultClient.
	HTTPClient *http.Client
	// JWKSRefresh is the scheduled refresh interval; default
	// DefaultJWKSRefresh.
	JWKSRefresh time.Duration
	// JWKSMinRefresh is the least time between two refreshes caused by
	// unknown kids; default DefaultJWKSMinRefresh.
	JWKSMinRefresh time.Duration
}

// provider is one issuer's keys and checks.
type provider struct {
	issuers   []string // accepted iss; empty: any (the default issuer only)
	keys      []verifyKey
	jwks      []*jwksSource
	audiences []string
	tenants   []string
}

// NewVerifier returns a Verifier for HS256 tokens signed with secret.
func NewVerifier(secret []byte) (*Verifier, error) {
	if len(secret) < MinSecretLen {
		return nil, ErrShortSecret
	}
	return NewVerifierConfig(Config{Secret: secret})
}

// NewVerifierConfig returns a Verifier for the keys and issuers of cfg. It
// reads the key files and fetches every JWKS URL once (an error if one
// fails), then refreshes them in the background until Close.
func NewVerifierConfig(cfg Config) (*Verifier, error) {
	if cfg.JWKSRefresh <= 0 {
		cfg.JWKSRefresh = DefaultJWKSRefresh
	}
	if cfg.JWKSMinRefresh <= 0 {
		cfg.JWKSMinRefresh = DefaultJWKSMinRefresh
	}
	v := &Verifier{
		// The algorithm is checked in keyFor, which returns
		// ErrBadAlgorithm for errors.Is (the parser's own
		// WithValidMethods error could only be told apart by its text).
		parser: jwt.NewParser(
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
		),
		leeway: Leeway,
		stop:   make(chan struct{}),
	}
	build := func(name string, issuers []string, secret []byte, files, urls, auds, tenants []string) (*provider, error) {
		p := &provider{issuers: issuers, audiences: auds, tenants: tenants}
		if secret != nil {
			if len(secret) < MinSecretLen {
				return nil, fmt.Errorf("%s: %w", name, ErrShortSecret)
			}
			p.keys = append(p.keys, verifyKey{key: secret})
		}
		for _, f := range files {
			k, err := loadPEMKey(f)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			p.keys = append(p.keys, k)
		}
		for _, u := range urls {
			s, err := newJWKSSource(u, cfg.HTTPClient, cfg.JWKSMinRefresh)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			p.jwks = append(p.jwks, s)
			v.sources = append(v.sources, s)
		}
		for _, t := range tenants {
			if err := ValidateTenant(t); err != nil {
				return nil, fmt.Errorf("%s: tenant %q: %w", name, t, err)
			}
		}
		if len(p.keys) == 0 && len(p.jwks) == 0 {
			return nil, fmt.Errorf("%s: %w", name, ErrNoKeys)
		}
		return p, nil
	}
	if cfg.Secret != nil || len(cfg.PublicKeyFiles) > 0 || len(cfg.JWKSURLs) > 0 {
		p, err := build("auth", cfg.Issuers, cfg.Secret, cfg.PublicKeyFiles, cfg.JWKSURLs, cfg.Audiences, nil)
		if err != nil {
			return nil, err
		}
		v.def = p
		v.secret = cfg.Secret
		v.fastOK = cfg.Secret != nil && len(cfg.Issuers) == 0 && len(cfg.Audiences) == 0
	} else if len(cfg.Issuers) > 0 || len(cfg.Audiences) > 0 {
		return nil, fmt.Errorf("auth: issuers/audiences: %w", ErrNoKeys)
	}
	seen := map[string]bool{}
	for i, pc := range cfg.Providers {
		name := fmt.Sprintf("auth: provider %d (%q)", i+1, pc.Issuer)
		if pc.Issuer == "" {
			return nil, fmt.Errorf("%s: issuer is required", name)
		}
		if seen[pc.Issuer] {
			return nil, fmt.Errorf("%s: issuer listed twice", name)
		}
		seen[pc.Issuer] = true
		p, err := build(name, []string{pc.Issuer}, pc.Secret, pc.PublicKeyFiles, pc.JWKSURLs, pc.Audiences, pc.Tenants)
		if err != nil {
			return nil, err
		}
		v.providers = append(v.providers, p)
	}
	if v.def == nil && len(v.providers) == 0 {
		return nil, ErrNoKeys
	}
	for _, s := range v.sources {
		ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
		err := s.refresh(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	for _, s := range v.sources {
		go s.run(cfg.JWKSRefresh, v.stop)
	}
	return v, nil
}

// Close stops the background JWKS refreshes. The Verifier still verifies
// with the keys it holds.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() { close(v.stop) })
}

// JWKSFetches is the number of JWKS requests made so far (all URLs).
func (v *Verifier) JWKSFetches() int64 {
	var n int64
	for _, s := range v.sources {
		n += s.fetches.Load()
	}
	return n
}

// Leeway is the clock skew allowed on exp, iat and nbf. The gateway allows
// the same past exp before it closes a connection whose token expired.
const Leeway = 5 * time.Second

// Verify parses and checks a token, returning the identity it carries.
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrMissingToken
	}
	if v.fastOK {
		if id, ok := v.fastVerify(token, time.Now()); ok {
			return id, nil
		}
	}
	return v.slowVerify(token)
}

// issuerOf picks the provider of a token by its (not yet verified) iss:
// the provider naming it, else the default issuer if it accepts it.
func (v *Verifier) issuerOf(iss string) (*provider, error) {
	for _, p := range v.providers {
		if p.issuers[0] == iss {
			return p, nil
		}
	}
	if p := v.def; p != nil && (len(p.issuers) == 0 || slices.Contains(p.issuers, iss)) {
		return p, nil
	}
	return nil, ErrBadIssuer
}

// candidates appends to dst the keys of p that may verify a token signed
// with alg and naming kid ("" for none): keys with that kid, and keys
// without a kid (the secret, PEM files), of a type that fits alg.
// kidSeen reports whether some key had the kid, whatever its type.
func (p *provider) candidates(dst []jwt.VerificationKey, alg, kid string) (keys []jwt.VerificationKey, kidSeen bool) {
	add := func(ks []verifyKey) {
		for i := range ks {
			k := &ks[i]
			if kid != "" && k.kid != "" && k.kid != kid {
				continue
			}
			if kid != "" && k.kid == kid {
				kidSeen = true
			}
			if k.fits(alg) {
				dst = append(dst, k.key)
			}
		}
	}
	add(p.keys)
	for _, s := range p.jwks {
		add(s.current())
	}
	return dst, kidSeen
}

// keyFor is the key function of slowVerify: it refuses every algorithm
// but the allowed ones, picks the issuer by iss, and returns the keys of
// that issuer that fit the algorithm and kid. An unknown kid refreshes the
// issuer's JWKS (rate-bounded) once.
func (v *Verifier) keyFor(t *jwt.Token, issuer **provider) (any, error) {
	alg, _ := t.Header["alg"].(string)
	if m, ok := allowedAlgs[alg]; !ok || t.Method != m {
		return nil, ErrBadAlgorithm
	}
	kid := ""
	if x, ok := t.Header["kid"]; ok {
		s, ok := x.(string)
		if !ok {
			return nil, ErrMalformed
		}
		kid = s
	}
	iss := t.Claims.(*Claims).Issuer
	p, err := v.issuerOf(iss)
	if err != nil {
		return nil, err
	}
	*issuer = p
	var buf [4]jwt.VerificationKey
	keys, kidSeen := p.candidates(buf[:0], alg, kid)
	if len(keys) == 0 && kid != "" && !kidSeen && len(p.jwks) > 0 {
		for _, s := range p.jwks {
			s.refreshFor(kid)
		}
		keys, kidSeen = p.candidates(buf[:0], alg, kid)
	}
	switch {
	case len(keys) == 1:
		return keys[0], nil
	case len(keys) > 1:
		return jwt.VerificationKeySet{Keys: keys}, nil
	case kidSeen:
		return nil, ErrBadAlgorithm // the kid names a key of another type
	case kid != "":
		return nil, ErrUnknownKey
	}
	return nil, ErrBadAlgorithm // this issuer has no key for alg
}

// slowVerify is Verify through golang-jwt: every token the fast path
// (fast.go) does not accept.
func (v *Verifier) slowVerify(token string) (Identity, error) {
	var c Claims
	var p *provider
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		return v.keyFor(t, &p)
	})
	if err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenMalformed):
			return Identity{}, ErrMalformed
		case errors.Is(err, ErrBadAlgorithm):
			return Identity{}, ErrBadAlgorithm
		case errors.Is(err, ErrUnknownKey):
			return Identity{}, ErrUnknownKey
		case errors.Is(err, ErrBadIssuer):
			return Identity{}, ErrBadIssuer
		case errors.Is(err, ErrMalformed):
			return Identity{}, ErrMalformed
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			return Identity{}, ErrBadSignature
		case errors.Is(err, jwt.ErrTokenUnverifiable):
			return Identity{}, ErrBadAlgorithm
		case errors.Is(err, jwt.ErrTokenExpired):
			return Identity{}, ErrExpired
		case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			return Identity{}, ErrNotYetValid
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrTokenInvalidClaims):
			return Identity{}, ErrClaims
		}
		return Identity{}, ErrMalformed
	}
	if c.Subject == "" || c.IssuedAt == nil {
		return Identity{}, ErrClaims
	}
	if err := ValidateTenant(c.TenantID); err != nil {
		return Identity{}, err
	}
	if len(p.audiences) > 0 && !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(p.audiences, a) }) {
		return Identity{}, ErrBadAudience
	}
	if len(p.tenants) > 0 && !slices.Contains(p.tenants, c.TenantID) {
		return Identity{}, ErrTenantNotAllowed
	}
	return Identity{
		User:         c.Subject,
		Tenant:       c.TenantID,
		Issuer:       c.Issuer,
		Role:         c.Role,
		Capabilities: c.Capabilities,
		ExpiresAt:    c.ExpiresAt.Time,
	}, nil
}

// ValidateTenant checks that t can be one NATS subject token: 1 to
// MaxTenantLen bytes of letters, digits, '-' and '_'.
func ValidateTenant(t string) error {
	if t == "" || len(t) > MaxTenantLen {
		return ErrBadTenant
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return ErrBadTenant
		}
	}
	return nil
}

// MintOptions describe a token to mint.
type MintOptions struct {
	Tenant       string
	User         string
	Role         string
	Capabilities []string
	Issuer       string        // iss, if any
	Audience     []string      // aud, if any
	TTL          time.Duration // default 1h; negative is an error
	Now          time.Time     // default time.Now()
}

// ErrBadTTL: a negative MintOptions.TTL.
var ErrBadTTL = errors.New("auth: negative ttl")

// Mint signs an HS256 token.
func Mint(secret []byte, o MintOptions) (string, error) {
	if len(secret) < MinSecretLen {
		return "", ErrShortSecret
	}
	if err := ValidateTenant(o.Tenant); err != nil {
		return "", err
	}
	if o.User == "" {
		return "", fmt.Errorf("%w: sub is empty", ErrClaims)
	}
	if o.TTL < 0 {
		return "", ErrBadTTL
	}
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	c := Claims{
		TenantID:     o.Tenant,
		Role:         o.Role,
		Capabilities: o.Capabilities,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   o.User,
			Issuer:    o.Issuer,
			Audience:  o.Audience,
			IssuedAt:  jwt.NewNumericDate(o.Now),
			ExpiresAt: jwt.NewNumericDate(o.Now.Add(o.TTL)),
		},
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// DevSecretPath is where the single-node default keeps its generated secret,
// relative to the working directory.
const DevSecretPath = ".arqon/dev-secret"

// LoadOrCreateDevSecret reads the dev secret at path, creating it (64
// random bytes, hex, mode 0600, directory 0700) when absent. created
// reports whether it was made now.
func LoadOrCreateDevSecret(path string) (secret []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s := []byte(strings.TrimSpace(string(b)))
		if len(s) < MinSecretLen {
			return nil, false, fmt.Errorf("%w: %s", ErrShortSecret, path)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, false, fmt.Errorf("auth: %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
		}
		return s, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, false, err
	}
	s := []byte(fmt.Sprintf("%x", raw))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // created concurrently: read theirs
			return LoadOrCreateDevSecret(path)
		}
		return nil, false, err
	}
	if _, err := f.Write(append(s, '\n')); err != nil {
		f.Close()
		return nil, false, err
	}
	return s, true, f.Close()
}

// ReadSecret reads a secret from a file (trimmed), as the config's
// auth.secret_file names it.
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := []byte(strings.TrimSpace(string(b)))
	if len(s) < MinSecretLen {
		return nil, fmt.Errorf("%w: %s", ErrShortSecret, path)
	}
	return s, nil
}
