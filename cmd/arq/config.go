package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/spine"
)

// Config is the TOML configuration of arq serve. Unknown keys are an
// error, checked at start. Every field may be omitted.
type Config struct {
	NodeID string       `toml:"node_id"`
	Server ServerConfig `toml:"server"`
	Auth   AuthConfig   `toml:"auth"`
	NATS   NATSConfig   `toml:"nats"`
	Limits LimitsConfig `toml:"limits"`
	Policy PolicyConfig `toml:"policy"`
	Brain  BrainConfig  `toml:"brain"`
	API    APIConfig    `toml:"api"`
}

// ServerConfig: listeners.
type ServerConfig struct {
	Listen string `toml:"listen"` // default 127.0.0.1:8080
	Admin  string `toml:"admin"`  // default 127.0.0.1:9090
	// ReusePort lets several arq processes share the listen port.
	ReusePort bool `toml:"reuse_port"`
	// TLSTerminated acknowledges that a TLS terminator sits in front of a
	// non-loopback listener (netpoll serves plain TCP).
	TLSTerminated bool `toml:"tls_terminated_upstream"`
	// TLSCert and TLSKey (PEM files) make listen serve wss:// itself
	// (crypto/tls beside netpoll: see docs/OPERATIONS.md for when to
	// terminate TLS in front instead).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// LogFormat is "text" (default) or "json"; LogLevel "debug", "info"
	// (default), "warn" or "error".
	LogFormat string `toml:"log_format"`
	LogLevel  string `toml:"log_level"`
	// Demo serves the demo page at http://<listen>/ (web/demo); default:
	// on in the dev default (no auth.secret_file), off otherwise. Its dev
	// token endpoint exists only in the dev default on loopback.
	Demo *bool `toml:"demo"`
	// AdminToken, when set, is required (Authorization: Bearer, or
	// ?token=) by the admin page and its JSON (/admin/...); /metrics,
	// /healthz and /readyz stay as they are.
	AdminToken string `toml:"admin_token"`
	// GOGC sets the garbage collector's target percentage (0: Go's default,
	// 100, or the GOGC environment variable). Lower trades CPU for memory:
	// with many idle connections, 25 measured 5.6 KiB per connection
	// against 6.8 KiB at 100 (perf-reports/gateway.md).
	GOGC int `toml:"gogc"`
	// Timeouts, as Go durations ("25s").
	Heartbeat string `toml:"heartbeat_interval"`
	Idle      string `toml:"idle_timeout"`
	Handshake string `toml:"handshake_timeout"`
	Frame     string `toml:"frame_timeout"`
	Write     string `toml:"write_timeout"`
	// MaxWriteDelay: how long a busy writer may wait to coalesce writes
	// (default 40ms; "-1ms" or any negative: never wait).
	MaxWriteDelay string `toml:"max_write_delay"`
	// KeepExpiredSessions keeps connections open past their token's exp
	// (default: closed once exp plus the clock-skew leeway has passed).
	KeepExpiredSessions bool `toml:"keep_expired_sessions"`
	// AllowedOrigins: browser origins an upgrade may come from ("*",
	// "https://app.example.com", "https://*.example.com", "null"); empty:
	// any. Upgrades without an Origin header (non-browsers) are not refused.
	AllowedOrigins []string `toml:"allowed_origins"`
}

// AuthConfig: token verification.
type AuthConfig struct {
	// SecretFile holds the HS256 secret (at least 32 bytes). Empty uses the
	// dev secret in .arqon/dev-secret, allowed only on loopback listeners.
	SecretFile string `toml:"secret_file"`
	// PublicKeyFiles: PEM public keys (RSA >= 2048 bits, ECDSA P-256/P-384,
	// Ed25519) of an identity provider.
	PublicKeyFiles []string `toml:"public_key_files"`
	// JWKSURLs: https:// JWK Set URLs of an identity provider.
	JWKSURLs []string `toml:"jwks_urls"`
	// JWKSCAFile: PEM CA certificates trusted for the JWKS URLs besides the
	// system's (a private identity provider).
	JWKSCAFile string `toml:"jwks_ca_file"`
	// JWKSRefresh (default 15m) and JWKSMinRefresh (default 30s: the least
	// time between two refreshes caused by unknown kids), Go durations.
	JWKSRefresh    string `toml:"jwks_refresh"`
	JWKSMinRefresh string `toml:"jwks_min_refresh"`
	// Issuers: the iss values the keys above accept (empty: not checked).
	Issuers []string `toml:"issuers"`
	// Audiences: aud must name one of them (empty: not checked).
	Audiences []string `toml:"audiences"`
	// Providers: more issuers, each with its own keys ([[auth.provider]]).
	Providers []ProviderConfig `toml:"provider"`
	// RequireCapabilities: a token without a capabilities claim may do
	// nothing (default: everything in its tenant).
	RequireCapabilities bool `toml:"require_capabilities"`
	// PersonalPrefix: subjects <prefix>.<user>.> are readable only by that
	// user unless capabilities grant them (e.g. "user"; empty: off).
	PersonalPrefix string `toml:"personal_prefix"`
}

// ProviderConfig is one [[auth.provider]]: an identity provider's issuer,
// keys, audiences and the tenants it may issue tokens for.
type ProviderConfig struct {
	Issuer         string   `toml:"issuer"`
	SecretFile     string   `toml:"secret_file"`
	PublicKeyFiles []string `toml:"public_key_files"`
	JWKSURLs       []string `toml:"jwks_urls"`
	Audiences      []string `toml:"audiences"`
	Tenants        []string `toml:"tenants"`
}

// usesIdentityProvider reports whether tokens may come from keys other
// than the HS256 secret.
func (a AuthConfig) usesIdentityProvider() bool {
	return len(a.PublicKeyFiles) > 0 || len(a.JWKSURLs) > 0 || len(a.Providers) > 0
}

// verifierConfig turns the [auth] section and the HS256 secret (nil for
// none) into an auth.Config.
func verifierConfig(a AuthConfig, secret []byte) (auth.Config, error) {
	c := auth.Config{
		Secret:         secret,
		PublicKeyFiles: a.PublicKeyFiles,
		JWKSURLs:       a.JWKSURLs,
		Issuers:        a.Issuers,
		Audiences:      a.Audiences,
	}
	var err error
	if c.JWKSRefresh, err = parseDuration("auth.jwks_refresh", a.JWKSRefresh); err != nil {
		return c, err
	}
	if c.JWKSMinRefresh, err = parseDuration("auth.jwks_min_refresh", a.JWKSMinRefresh); err != nil {
		return c, err
	}
	if a.JWKSCAFile != "" {
		b, err := os.ReadFile(a.JWKSCAFile)
		if err != nil {
			return c, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(b) {
			return c, fmt.Errorf("config: auth.jwks_ca_file %s: no PEM certificate", a.JWKSCAFile)
		}
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	for _, p := range a.Providers {
		pc := auth.Provider{Issuer: p.Issuer, PublicKeyFiles: p.PublicKeyFiles, JWKSURLs: p.JWKSURLs,
			Audiences: p.Audiences, Tenants: p.Tenants}
		if p.SecretFile != "" {
			if pc.Secret, err = auth.ReadSecret(p.SecretFile); err != nil {
				return c, err
			}
		}
		c.Providers = append(c.Providers, pc)
	}
	return c, nil
}

// NATSConfig: the spine.
type NATSConfig struct {
	URL    string `toml:"url"`    // empty: embedded server
	Prefix string `toml:"prefix"` // default "arq"
	// EmbeddedListen makes the embedded server listen for other nodes
	// (loopback only: it serves no TLS). It then requires credentials,
	// generated into .arqon/nats-gateway-password and
	// .arqon/nats-brain-password (users "gateway" and "brain").
	EmbeddedListen string `toml:"embedded_listen"`
	// Credentials for an external NATS: user and password_file, or
	// nkey_file (an nkey seed), or creds_file; ca_file for TLS. Without
	// any, a node joining a loopback NATS uses .arqon's generated
	// password when the file is there (a node started in the same
	// directory as the one embedding NATS).
	User         string `toml:"user"`
	PasswordFile string `toml:"password_file"`
	NKeyFile     string `toml:"nkey_file"`
	CredsFile    string `toml:"creds_file"`
	CAFile       string `toml:"ca_file"`
	// Interest: "subject" (a NATS subscription per subscribed pattern,
	// the default) or "tenant" (one per tenant).
	Interest string `toml:"interest"`
	// NoRandomize: try the servers of url in order (default: shuffled).
	NoRandomize bool `toml:"no_randomize"`
	// InterestHeartbeat is the interval of the nodes' interest protocol
	// (default 1s; a silent node is forgotten after 15).
	InterestHeartbeat string `toml:"interest_heartbeat"`
	// Linger is how long a pattern's NATS subscription outlives its last
	// local subscriber, so a reconnect storm does not churn NATS and the
	// other nodes (default 2s; "0s": removed at once).
	Linger string `toml:"linger"`
}

// Where a listening embedded NATS keeps its generated passwords.
const (
	natsGatewayPasswordPath = ".arqon/nats-gateway-password"
	natsBrainPasswordPath   = ".arqon/nats-brain-password"
)

// spineCredentials fills the spine's credentials from the config: the
// embedded server's generated passwords, or an external NATS's
// credentials (user is the one to use with .arqon's generated password
// when nothing is configured: "gateway" or "brain").
func spineCredentials(c NATSConfig, sc *spine.Config, user string) error {
	if c.URL == "" {
		if c.EmbeddedListen == "" {
			return nil
		}
		if !isLoopback(c.EmbeddedListen) {
			return fmt.Errorf("%w: nats.embedded_listen %s is not a loopback address (the embedded NATS serves no TLS; run a NATS cluster with TLS and set nats.url)", errInsecure, c.EmbeddedListen)
		}
		gw, _, err := auth.LoadOrCreateDevSecret(natsGatewayPasswordPath)
		if err != nil {
			return err
		}
		br, _, err := auth.LoadOrCreateDevSecret(natsBrainPasswordPath)
		if err != nil {
			return err
		}
		sc.EmbeddedGatewayPassword, sc.EmbeddedBrainPassword = string(gw), string(br)
		return nil
	}
	sc.User, sc.NKeySeedFile, sc.CredsFile, sc.CAFile = c.User, c.NKeyFile, c.CredsFile, c.CAFile
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return fmt.Errorf("config: nats.password_file: %w", err)
		}
		sc.Password = strings.TrimSpace(string(b))
	}
	if c.User == "" && c.NKeyFile == "" && c.CredsFile == "" && !strings.Contains(c.URL, "@") {
		path := natsGatewayPasswordPath
		if user == spine.BrainUser {
			path = natsBrainPasswordPath
		}
		if b, err := os.ReadFile(path); err == nil {
			sc.User, sc.Password = user, strings.TrimSpace(string(b))
		}
	}
	return nil
}

// LimitsConfig: per-connection bounds.
type LimitsConfig struct {
	MaxFrameBytes       int  `toml:"max_frame_bytes"`
	MaxSubscriptions    int  `toml:"max_subscriptions"`
	OutboundBufferBytes int  `toml:"outbound_buffer_bytes"`
	DropOnSlowConsumer  bool `toml:"drop_on_slow_consumer"`
	// PublishRate per connection and second (0: default 10000; -1: none).
	PublishRate  float64 `toml:"publish_rate"`
	PublishBurst int     `toml:"publish_burst"`
}

// PolicyConfig: Wasm policies.
type PolicyConfig struct {
	Dir     string `toml:"dir"`
	Default string `toml:"default"` // "allow" (dev default) or "deny"
	Timeout string `toml:"timeout"`
}

// BrainConfig: presence. arq serve runs a brain in process unless
// enabled = false (a brain runs elsewhere: arq brain).
type BrainConfig struct {
	// Enabled runs a brain in this process; default true.
	Enabled *bool `toml:"enabled"`
	// Valkey is the store's address ("127.0.0.1:6379"); empty keeps
	// presence in memory (a single node).
	Valkey         string `toml:"valkey"`
	ValkeyPassword string `toml:"valkey_password"`
	// ValkeyPasswordFile holds the password (preferred over inline).
	ValkeyPasswordFile string `toml:"valkey_password_file"`
	// ValkeyCAFile makes the Valkey connection TLS, verified against
	// this CA (PEM).
	ValkeyCAFile string `toml:"valkey_ca_file"`
	ValkeyDB     int    `toml:"valkey_db"`
	// NodeTTL: a gateway node silent this long is dead and its members
	// leave; default 6s.
	NodeTTL string `toml:"node_ttl"`
	// Heartbeat: how often this gateway node tells brains it is alive;
	// default 2s (keep it well under node_ttl).
	Heartbeat string `toml:"heartbeat_interval"`
	// Presence = false turns presence off on this gateway node.
	Presence *bool `toml:"presence"`
}

// APIConfig: the server API for backends (docs/API.md).
type APIConfig struct {
	// Enabled serves the API; default: on in the dev default (no
	// auth.secret_file: an admin key derived from the dev secret), off
	// otherwise.
	Enabled *bool `toml:"enabled"`
	// Listen serves it on a listener of its own; empty: on the admin
	// listener.
	Listen string `toml:"listen"`
	// Keys that may call it.
	Keys []APIKeyConfig `toml:"keys"`
	// NATS also answers API publishes sent as NATS requests to
	// "<prefix>.$api.<tenant>.publish" (access by NATS permissions);
	// default false.
	NATS bool `toml:"nats"`
}

// APIKeyConfig is one API key: its secret inline (key) or in a file
// (key_file, preferred), bound to tenant or, without one, an admin key.
type APIKeyConfig struct {
	Name    string `toml:"name"`
	Tenant  string `toml:"tenant"`
	Key     string `toml:"key"`
	KeyFile string `toml:"key_file"`
}

// enabled reports whether a brain runs in this process.
func (b BrainConfig) enabled() bool { return b.Enabled == nil || *b.Enabled }

// newLogger builds the process's logger from [server] log_format and
// log_level.
func newLogger(s ServerConfig) (*slog.Logger, error) {
	var level slog.Level
	switch strings.ToLower(s.LogLevel) {
	case "", "info":
		level = slog.LevelInfo
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("config: server.log_level %q (debug, info, warn, error)", s.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(s.LogFormat) {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("config: server.log_format %q (text, json)", s.LogFormat)
}

// loadConfig reads a TOML file strictly.
func loadConfig(path string) (*Config, error) {
	var c Config
	if path == "" {
		return &c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return &c, nil
}

func parseDuration(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("config: %s: invalid duration %q", name, s)
	}
	return d, nil
}

// isLoopback reports whether addr ("host:port") binds only loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var errInsecure = errors.New("refusing to start insecurely")
