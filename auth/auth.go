// Package auth verifies and mints the JWTs that clients present at the
// WebSocket upgrade.
//
// Tokens are HS256 for now (a shared secret); RS256 and EdDSA with public
// keys from a file come later behind the same Verifier. Claims: sub (user),
// tenant_id, exp, iat, with role and capabilities carried along. The tenant
// comes only from a verified token and must be a single subject token, so it
// can prefix NATS subjects and storage keys safely.
package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
)

// MinSecretLen is the shortest HS256 secret accepted.
const MinSecretLen = 32

// MaxTenantLen bounds tenant_id.
const MaxTenantLen = 64

// Claims are the claims ArqonBus reads from a token.
type Claims struct {
	TenantID     string   `json:"tenant_id"`
	Role         string   `json:"role,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
	jwt.RegisteredClaims
}

// Identity is who a verified token says the client is.
type Identity struct {
	User         string
	Tenant       string
	Role         string
	Capabilities []string
	ExpiresAt    time.Time
}

// Verifier checks tokens. Safe for concurrent use.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
	leeway time.Duration
	fast   fastVerifier
}

// NewVerifier returns a Verifier for HS256 tokens signed with secret.
func NewVerifier(secret []byte) (*Verifier, error) {
	if len(secret) < MinSecretLen {
		return nil, ErrShortSecret
	}
	return &Verifier{
		secret: secret,
		// The algorithm is checked in slowVerify's key function, which
		// returns ErrBadAlgorithm for errors.Is (the parser's own
		// WithValidMethods error could only be told apart by its text).
		parser: jwt.NewParser(
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
		),
		leeway: Leeway,
	}, nil
}

// Leeway is the clock skew allowed on exp, iat and nbf. The gateway allows
// the same past exp before it closes a connection whose token expired.
const Leeway = 5 * time.Second

// Verify parses and checks a token, returning the identity it carries.
func (v *Verifier) Verify(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrMissingToken
	}
	if id, ok := v.fastVerify(token, time.Now()); ok {
		return id, nil
	}
	return v.slowVerify(token)
}

// slowVerify is Verify through golang-jwt: every token the fast path
// (fast.go) does not accept.
func (v *Verifier) slowVerify(token string) (Identity, error) {
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodHS256 {
			return nil, ErrBadAlgorithm
		}
		return v.secret, nil
	})
	if err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenMalformed):
			return Identity{}, ErrMalformed
		case errors.Is(err, ErrBadAlgorithm):
			return Identity{}, ErrBadAlgorithm
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
	return Identity{
		User:         c.Subject,
		Tenant:       c.TenantID,
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
	TTL          time.Duration // default 1h
	Now          time.Time     // default time.Now()
}

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
