package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/policy"
	"github.com/arqonbus/arqonbus/spine"
)

// runConfig is "arq config check FILE" and "arq config default".
func runConfig(args []string) error {
	usage := errors.New("usage: arq config check FILE | arq config default")
	if len(args) == 0 {
		return usage
	}
	switch args[0] {
	case "default":
		fs := flag.NewFlagSet("config default", flag.ContinueOnError)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		_, err := io.WriteString(os.Stdout, defaultConfig)
		return err
	case "check":
		fs := flag.NewFlagSet("config check", flag.ContinueOnError)
		quiet := fs.Bool("q", false, "print nothing when the file is valid")
		noFiles := fs.Bool("skip-files", false, "do not open the files the config names (checking it on another machine than where it runs)")
		fs.Usage = func() {
			fmt.Fprintln(fs.Output(), "usage: arq config check [-q] [-skip-files] FILE\n\nValidates FILE strictly (unknown keys, values, files it names, the rules arq serve\nenforces at start) and prints the effective settings, defaults filled in.")
			fs.PrintDefaults()
		}
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			fs.Usage()
			return usage
		}
		cfg, err := checkConfig(fs.Arg(0), !*noFiles)
		if err != nil {
			return err
		}
		if *quiet {
			return nil
		}
		fmt.Printf("# %s is valid. Effective settings (defaults filled in; flags such as --listen or --nats may still override them):\n", fs.Arg(0))
		return toml.NewEncoder(os.Stdout).Encode(redacted(effectiveConfig(*cfg)))
	case "-h", "--help", "help":
		fmt.Fprintln(os.Stderr, usage.Error())
		return flag.ErrHelp
	}
	return usage
}

// checkConfig loads path strictly and checks what arq serve would refuse at
// start without starting anything: values, addresses, durations, the files
// the config names, and the rules against starting insecurely. It does not
// contact NATS, Valkey or JWKS URLs.
func checkConfig(path string, checkFiles bool) (*Config, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("config %s: "+format, append([]any{path}, a...)...))
	}
	e := effectiveConfig(*cfg)
	for name, s := range map[string]string{
		"server.heartbeat_interval": cfg.Server.Heartbeat, "server.idle_timeout": cfg.Server.Idle,
		"server.handshake_timeout": cfg.Server.Handshake, "server.frame_timeout": cfg.Server.Frame,
		"server.write_timeout": cfg.Server.Write, "brain.node_ttl": cfg.Brain.NodeTTL,
		"brain.heartbeat_interval": cfg.Brain.Heartbeat, "policy.timeout": cfg.Policy.Timeout,
		"auth.jwks_refresh": cfg.Auth.JWKSRefresh, "auth.jwks_min_refresh": cfg.Auth.JWKSMinRefresh,
	} {
		if _, err := parseDuration(name, s); err != nil {
			bad("%v", err)
		}
	}
	for name, a := range map[string]string{"server.listen": e.Server.Listen, "server.admin": e.Server.Admin,
		"nats.embedded_listen": cfg.NATS.EmbeddedListen, "api.listen": cfg.API.Listen} {
		if a == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a); err != nil {
			bad("%s: %v", name, err)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			bad("%s: port %q", name, port)
		}
	}
	if cfg.Policy.Default != "" {
		if _, err := policy.ParseDefaultAction(cfg.Policy.Default); err != nil {
			bad("policy.default: %v", err)
		}
	}
	if cfg.Limits.MaxFrameBytes < 0 || cfg.Limits.MaxSubscriptions < 0 || cfg.Limits.OutboundBufferBytes < 0 || cfg.Limits.PublishBurst < 0 {
		bad("limits: negative values are not allowed")
	}
	if cfg.Limits.PublishRate < 0 && cfg.Limits.PublishRate != -1 {
		bad("limits.publish_rate: %v (a rate, or -1 for none)", cfg.Limits.PublishRate)
	}
	if cfg.Brain.ValkeyDB < 0 {
		bad("brain.valkey_db: %d", cfg.Brain.ValkeyDB)
	}
	if hb, ttl := mustDuration(e.Brain.Heartbeat), mustDuration(e.Brain.NodeTTL); hb > 0 && ttl > 0 && hb*2 > ttl {
		bad("brain.heartbeat_interval %s must be well under brain.node_ttl %s (at most half)", hb, ttl)
	}
	if _, err := newLogger(cfg.Server); err != nil {
		bad("%v", err)
	}
	if (cfg.Server.TLSCert == "") != (cfg.Server.TLSKey == "") {
		bad("server.tls_cert and server.tls_key go together")
	}
	if cfg.Server.TLSCert != "" && checkFiles {
		if _, err := tls.LoadX509KeyPair(cfg.Server.TLSCert, cfg.Server.TLSKey); err != nil {
			bad("server.tls_cert / tls_key: %v", err)
		}
	}
	public := !isLoopback(e.Server.Listen) || !isLoopback(e.Server.Admin)
	plaintextOff := (!isLoopback(e.Server.Listen) && cfg.Server.TLSCert == "") || !isLoopback(e.Server.Admin)
	if plaintextOff && !cfg.Server.TLSTerminated {
		bad("%v: listen %s / admin %s is not a loopback address; put a TLS terminator in front and set server.tls_terminated_upstream = true", errInsecure, e.Server.Listen, e.Server.Admin)
	}
	if public && cfg.Auth.SecretFile == "" && !cfg.Auth.usesIdentityProvider() {
		bad("%v: a non-loopback listener needs auth.secret_file (or an identity provider), not the dev secret", errInsecure)
	}
	if cfg.Auth.SecretFile != "" && checkFiles {
		if _, err := auth.ReadSecret(cfg.Auth.SecretFile); err != nil {
			bad("auth.secret_file: %v", err)
		}
	}
	files := map[string]string{"auth.jwks_ca_file": cfg.Auth.JWKSCAFile, "nats.password_file": cfg.NATS.PasswordFile,
		"nats.nkey_file": cfg.NATS.NKeyFile, "nats.creds_file": cfg.NATS.CredsFile, "nats.ca_file": cfg.NATS.CAFile}
	for i, f := range cfg.Auth.PublicKeyFiles {
		files[fmt.Sprintf("auth.public_key_files[%d]", i)] = f
	}
	for i, p := range cfg.Auth.Providers {
		files[fmt.Sprintf("auth.provider[%d].secret_file", i)] = p.SecretFile
		for j, f := range p.PublicKeyFiles {
			files[fmt.Sprintf("auth.provider[%d].public_key_files[%d]", i, j)] = f
		}
	}
	for i, k := range cfg.API.Keys {
		files[fmt.Sprintf("api.keys[%d].key_file", i)] = k.KeyFile
	}
	for name, f := range files {
		if f == "" || !checkFiles {
			continue
		}
		if fh, err := os.Open(f); err != nil {
			bad("%s: %v", name, err)
		} else {
			fh.Close()
		}
	}
	if cfg.Policy.Dir != "" && checkFiles {
		if st, err := os.Stat(cfg.Policy.Dir); err != nil || !st.IsDir() {
			bad("policy.dir %s: not a directory", cfg.Policy.Dir)
		}
	}
	if cfg.NATS.EmbeddedListen != "" && cfg.NATS.URL == "" && !isLoopback(cfg.NATS.EmbeddedListen) {
		bad("%v: nats.embedded_listen %s is not a loopback address", errInsecure, cfg.NATS.EmbeddedListen)
	}
	if cfg.NATS.PasswordFile != "" && cfg.NATS.User == "" {
		bad("nats.password_file needs nats.user")
	}
	switch cfg.NATS.Interest {
	case "", spine.InterestSubject, spine.InterestTenant:
	default:
		bad("nats.interest %q: want %q or %q", cfg.NATS.Interest, spine.InterestSubject, spine.InterestTenant)
	}
	if _, err := parseDuration("nats.interest_heartbeat", cfg.NATS.InterestHeartbeat); err != nil {
		bad("%v", err)
	}
	if _, err := parseDuration("nats.linger", cfg.NATS.Linger); err != nil {
		bad("%v", err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// redacted hides secrets written inline in a config.
func redacted(c Config) Config {
	hide := func(s *string) {
		if *s != "" {
			*s = "(redacted)"
		}
	}
	hide(&c.Server.AdminToken)
	hide(&c.Brain.ValkeyPassword)
	c.API.Keys = append([]APIKeyConfig(nil), c.API.Keys...)
	for i := range c.API.Keys {
		hide(&c.API.Keys[i].Key)
	}
	return c
}

func mustDuration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// effectiveConfig fills in the defaults arq serve applies to what the file
// leaves out (gateway, brain and policy defaults; docs/CONFIG.md).
func effectiveConfig(c Config) Config {
	def := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	yes, no := true, false
	devDefault := c.Auth.SecretFile == "" && !c.Auth.usesIdentityProvider()
	def(&c.Server.Listen, "127.0.0.1:8080")
	def(&c.Server.Admin, "127.0.0.1:9090")
	def(&c.Server.Heartbeat, "25s")
	if c.Server.Idle == "" {
		c.Server.Idle = (2*mustDuration(c.Server.Heartbeat) + 10*time.Second).String()
	}
	def(&c.Server.Handshake, "10s")
	def(&c.Server.Frame, "15s")
	def(&c.Server.Write, "10s")
	def(&c.Server.MaxWriteDelay, "40ms")
	def(&c.Server.LogFormat, "text")
	def(&c.Server.LogLevel, "info")
	if c.Server.Demo == nil {
		c.Server.Demo = map[bool]*bool{true: &yes, false: &no}[devDefault]
	}
	if c.Server.AllowedOrigins == nil {
		c.Server.AllowedOrigins = []string{}
	}
	def(&c.Auth.JWKSRefresh, "15m0s")
	def(&c.Auth.JWKSMinRefresh, "30s")
	def(&c.NATS.Prefix, "arq")
	def(&c.NATS.Interest, "subject")
	def(&c.NATS.InterestHeartbeat, "1s")
	def(&c.NATS.Linger, "2s")
	if c.Limits.MaxFrameBytes <= 0 {
		c.Limits.MaxFrameBytes = 1 << 20
	}
	if c.Limits.MaxSubscriptions <= 0 {
		c.Limits.MaxSubscriptions = 1024
	}
	if c.Limits.OutboundBufferBytes <= 0 {
		c.Limits.OutboundBufferBytes = 1 << 20
	}
	if c.Limits.PublishRate == 0 {
		c.Limits.PublishRate = 10000
	}
	if c.Limits.PublishRate > 0 && c.Limits.PublishBurst <= 0 {
		c.Limits.PublishBurst = max(1, int(c.Limits.PublishRate/5))
	}
	def(&c.Policy.Default, "allow")
	def(&c.Policy.Timeout, policy.DefaultTimeout.String())
	if c.Brain.Enabled == nil {
		c.Brain.Enabled = &yes
	}
	def(&c.Brain.NodeTTL, "6s")
	def(&c.Brain.Heartbeat, "2s")
	if c.Brain.Presence == nil {
		c.Brain.Presence = &yes
	}
	if c.API.Enabled == nil {
		c.API.Enabled = map[bool]*bool{true: &yes, false: &no}[devDefault]
	}
	return c
}

// defaultConfig is what "arq config default" prints: every key with its
// default, the optional ones commented out. TestConfigDefaultCoversEveryKey
// keeps it in step with Config.
var defaultConfig = strings.TrimLeft(`
# ArqonBus configuration (arq serve --config FILE; arq brain reads [nats],
# [brain] and [server] tls_terminated_upstream). Every key is optional: this
# file is the defaults. Unknown keys are an error at start; check a file
# with "arq config check FILE". docs/CONFIG.md explains each key.

# node_id = "gw-1"                  # default: random node-xxxxxxxxxx; must be unique

[server]
listen = "127.0.0.1:8080"           # WebSocket (ws://HOST/v1/socket)
admin = "127.0.0.1:9090"            # /metrics /healthz /readyz /debug/pprof (and the API in the dev default)
reuse_port = false                  # SO_REUSEPORT: several arq processes share listen
tls_terminated_upstream = false     # must be true when listen or admin is not loopback (unless tls_cert)
# tls_cert = "/etc/arq/tls.crt"     # with tls_key: listen serves wss:// itself (PEM)
# tls_key = "/etc/arq/tls.key"
log_format = "text"                 # text or json (log/slog on stderr)
log_level = "info"                  # debug (adds connection open/close), info, warn, error
# demo = true                       # the demo page on listen; default: on only in the dev default
# admin_token = ""                  # required by the admin page when set
gogc = 0                            # GC target percentage; 0: Go's default (100 or $GOGC)
heartbeat_interval = "25s"          # a silent connection gets a ping
idle_timeout = "1m0s"               # default 2 x heartbeat_interval + 10s
handshake_timeout = "10s"
frame_timeout = "15s"
write_timeout = "10s"
max_write_delay = "40ms"            # a busy writer may wait this long to coalesce writes; "0s": never
keep_expired_sessions = false       # true: tokens checked only at connect
allowed_origins = []                # browser origins allowed to upgrade; empty: any

[auth]
# secret_file = "/etc/arq/hs256.secret"   # HS256 secret (>= 32 bytes); required off loopback unless keys below
# public_key_files = []             # PEM public keys of an identity provider
# jwks_urls = []                    # https:// JWK Set URLs
# jwks_ca_file = ""                 # extra CA for the JWKS URLs
jwks_refresh = "15m0s"
jwks_min_refresh = "30s"
# issuers = []                      # accepted iss values (empty: not checked)
# audiences = []                    # aud must name one (empty: not checked)
require_capabilities = false        # true: a token without capabilities may do nothing
# personal_prefix = ""              # e.g. "user": <prefix>.<user>.> only for that user
#
# [[auth.provider]]                 # more identity providers, each with its own keys
# issuer = "https://id.example.com/"
# secret_file = ""
# public_key_files = []
# jwks_urls = ["https://id.example.com/.well-known/jwks.json"]
# audiences = ["arqonbus"]
# tenants = ["acme"]

[nats]
# url = "nats://nats-1:4222,nats://nats-2:4222"   # default: an embedded NATS server
prefix = "arq"                      # subjects are <prefix>.<tenant>.<subject>
# embedded_listen = "127.0.0.1:4222"  # let other nodes reach the embedded server (loopback only)
# user = "gateway"                  # credentials for an external NATS ...
# password_file = "/etc/arq/nats-gateway.password"
# nkey_file = ""                    # ... or an nkey seed
# creds_file = ""                   # ... or a creds file
# ca_file = ""                      # CA of a NATS that speaks TLS
no_randomize = false                # true: try the url's servers in order (e.g. this host's NATS first)
interest = "subject"                # a NATS subscription per subscribed pattern; "tenant": one per tenant
interest_heartbeat = "1s"           # nodes tell each other their patterns; a silent node is forgotten after 15
linger = "2s"                       # a pattern's NATS subscription outlives its last local subscriber this long ("0s": none)

[limits]
max_frame_bytes = 1048576
max_subscriptions = 1024
outbound_buffer_bytes = 1048576
drop_on_slow_consumer = false
publish_rate = 10000.0              # per connection and second; -1: no limit
publish_burst = 2000                # default publish_rate / 5

[policy]
# dir = "/etc/arq/policies"         # Wasm policies, hot-swapped
default = "allow"                   # "allow" or "deny" when no policy decides
timeout = "2ms"                     # per decision; longer is a deny

[brain]
enabled = true                      # run a presence brain in this process; false: arq brain elsewhere
# valkey = "127.0.0.1:6379"         # default: presence in memory (one node)
# valkey_password = ""
# valkey_password_file = ""         # the password in a file (preferred)
# valkey_ca_file = ""               # TLS to Valkey, verified against this CA
valkey_db = 0
node_ttl = "6s"                     # a gateway silent this long is dead: its members leave
heartbeat_interval = "2s"           # this gateway's heartbeat to the brains
presence = true                     # false: presence off on this node

[api]
# enabled = true                    # the server API; default: on only in the dev default
# listen = "127.0.0.1:9100"         # default: on the admin listener
nats = false                        # also answer publishes sent as NATS requests
#
# [[api.keys]]
# name = "backend"
# tenant = "acme"                   # no tenant: an admin key
# key = ""                          # prefer key_file
# key_file = "/etc/arq/api-backend.key"
`, "\n")
