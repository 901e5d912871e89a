package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// A JWKS source: the public keys an identity provider publishes at a URL
// (a JWK Set, RFC 7517), fetched over HTTPS when the Verifier is made,
// then again every JWKSRefresh and when a token names a kid the set does
// not hold. Refreshes for unknown kids are at most one per
// JWKSMinRefresh, whatever the number of tokens asking, so a flood of
// tokens with made-up kids costs the provider one request per interval;
// tokens asking in between are refused with ErrUnknownKey at once. A
// failed fetch keeps the keys already held. A fetch replaces the whole
// set: a key the provider removed stops verifying at the next refresh.

// Defaults of the JWKS refresh.
const (
	DefaultJWKSRefresh    = 15 * time.Minute
	DefaultJWKSMinRefresh = 30 * time.Second
	jwksFetchTimeout      = 10 * time.Second
	maxJWKSBytes          = 1 << 20
)

// ErrJWKS is a failed JWKS fetch (wrapped with the cause).
var ErrJWKS = errors.New("auth: JWKS fetch failed")

type jwksSource struct {
	url         string
	client      *http.Client
	minInterval time.Duration

	keys    atomic.Pointer[[]verifyKey]
	fetches atomic.Int64 // requests made, for tests and reports

	mu   sync.Mutex // one fetch at a time
	last time.Time  // start of the last fetch (under mu)
}

func newJWKSSource(rawURL string, client *http.Client, minInterval time.Duration) (*jwksSource, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("auth: JWKS URL %q: must be an https:// URL", rawURL)
	}
	if client == nil {
		client = http.DefaultClient
	}
	s := &jwksSource{url: rawURL, client: client, minInterval: minInterval}
	s.keys.Store(new([]verifyKey))
	return s, nil
}

// current returns the keys held now.
func (s *jwksSource) current() []verifyKey { return *s.keys.Load() }

func hasKid(keys []verifyKey, kid string) bool {
	for i := range keys {
		if keys[i].kid == kid {
			return true
		}
	}
	return false
}

// refresh fetches the set now (at start and on the schedule).
func (s *jwksSource) refresh(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetchLocked(ctx)
}

// refreshFor fetches the set because a token named kid, unless another
// fetch brought kid meanwhile or the last fetch is less than minInterval
// old. It reports whether kid is now held.
func (s *jwksSource) refreshFor(kid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hasKid(s.current(), kid) {
		return true
	}
	if time.Since(s.last) < s.minInterval {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	if s.fetchLocked(ctx) != nil {
		return false
	}
	return hasKid(s.current(), kid)
}

func (s *jwksSource) fetchLocked(ctx context.Context) error {
	s.last = time.Now()
	s.fetches.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrJWKS, s.url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrJWKS, s.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s: HTTP %d", ErrJWKS, s.url, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrJWKS, s.url, err)
	}
	if len(b) > maxJWKSBytes {
		return fmt.Errorf("%w: %s: larger than %d bytes", ErrJWKS, s.url, maxJWKSBytes)
	}
	keys, _, err := parseJWKS(b)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrJWKS, s.url, err)
	}
	s.keys.Store(&keys)
	return nil
}

// run refreshes the set every interval until stop is closed.
func (s *jwksSource) run(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
			_ = s.refresh(ctx) // on failure the old keys stay
			cancel()
		}
	}
}
