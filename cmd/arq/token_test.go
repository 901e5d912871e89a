package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/arqonbus/arqonbus/auth"
)

// mintCLI runs arq token with args and returns the token it prints.
func mintCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	err = runToken(args)
	os.Stdout = old
	w.Close()
	out, _ := io.ReadAll(r)
	return strings.TrimSpace(string(out)), err
}

func TestTokenCLI(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	secret := []byte("0123456789abcdef0123456789abcdef-cli")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := mintCLI(t, "--secret-file", secretFile, "--tenant", "acme", "--user", "alice",
		"--cap", "sub:chat.>", "--cap", "pub:chat.*.msg", "--capabilities", "presence:room.*,billing")
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(tok)
	if err != nil || id.User != "alice" || !slices.Equal(id.Capabilities, []string{"sub:chat.>", "pub:chat.*.msg", "presence:room.*", "billing"}) {
		t.Fatalf("%+v %v", id, err)
	}
	// --sub is an alias of --user; no --cap: no claim at all.
	tok, err = mintCLI(t, "--secret-file", secretFile, "--tenant", "acme", "--sub", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(tok); err != nil || id.User != "bob" || id.Capabilities != nil {
		t.Fatalf("%+v %v", id, err)
	}
	// --no-caps: an empty claim (grants nothing).
	tok, err = mintCLI(t, "--secret-file", secretFile, "--tenant", "acme", "--user", "c", "--no-caps")
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(tok); err != nil || id.Capabilities == nil || len(id.Capabilities) != 0 {
		t.Fatalf("--no-caps: %#v %v", id.Capabilities, err)
	}
	for _, args := range [][]string{
		{"--tenant", "acme", "--user", "u", "--ttl", "-1h"},
		{"--tenant", "acme", "--user", "u", "--ttl", "0s"},
		{"--tenant", "acme", "--user", "u", "--cap", "sub:a..b"},
		{"--tenant", "acme", "--user", "u", "--cap", ""},
		{"--tenant", "acme", "--user", "u", "--no-caps", "--cap", "sub:a"},
		{"--tenant", "acme"},
		{"--tenant", "acme", "--user", "u", "extra"},
	} {
		if tok, err := mintCLI(t, append([]string{"--secret-file", secretFile}, args...)...); err == nil || tok != "" {
			t.Errorf("%v: token %q, err %v", args, tok, err)
		}
	}
	if _, err := mintCLI(t, "--secret-file", secretFile, "--tenant", "acme", "--user", "u", "--cap", "sub:a..b"); !errors.Is(err, auth.ErrBadCapabilities) {
		t.Errorf("bad cap: %v", err)
	}
}

// The [auth] and [server] keys of identity providers, capabilities and
// origins are read strictly and reach the verifier.
func TestAuthConfigKeys(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "provider-secret")
	os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef-provider"), 0o600)
	path := filepath.Join(dir, "arq.toml")
	os.WriteFile(path, []byte(`
[server]
allowed_origins = ["https://app.example.com", "https://*.example.org"]

[auth]
issuers = ["https://ours.example/"]
audiences = ["arqonbus"]
jwks_refresh = "5m"
jwks_min_refresh = "10s"
require_capabilities = true
personal_prefix = "user"

[[auth.provider]]
issuer = "https://tenant-a.example/"
secret_file = "`+secret+`"
audiences = ["bus"]
tenants = ["acme"]
`), 0o600)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Auth.RequireCapabilities || cfg.Auth.PersonalPrefix != "user" || len(cfg.Server.AllowedOrigins) != 2 ||
		len(cfg.Auth.Providers) != 1 || cfg.Auth.Providers[0].Tenants[0] != "acme" || !cfg.Auth.usesIdentityProvider() {
		t.Fatalf("%+v", cfg)
	}
	ac, err := verifierConfig(cfg.Auth, []byte("0123456789abcdef0123456789abcdef-main"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifierConfig(ac)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok, _ := auth.Mint([]byte("0123456789abcdef0123456789abcdef-provider"), auth.MintOptions{
		Tenant: "acme", User: "u", Issuer: "https://tenant-a.example/", Audience: []string{"bus"}})
	if id, err := v.Verify(tok); err != nil || id.Issuer != "https://tenant-a.example/" {
		t.Fatalf("provider token: %+v %v", id, err)
	}
	tok, _ = auth.Mint([]byte("0123456789abcdef0123456789abcdef-provider"), auth.MintOptions{
		Tenant: "beta", User: "u", Issuer: "https://tenant-a.example/", Audience: []string{"bus"}})
	if _, err := v.Verify(tok); !errors.Is(err, auth.ErrTenantNotAllowed) {
		t.Fatalf("provider token for another tenant: %v", err)
	}
	os.WriteFile(path, []byte("[auth]\njwks_url = \"https://x\"\n"), 0o600)
	if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), "auth.jwks_url") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(path, []byte("[auth]\njwks_refresh = \"soon\"\n"), 0o600)
	cfg, _ = loadConfig(path)
	if _, err := verifierConfig(cfg.Auth, nil); err == nil {
		t.Fatal("bad duration accepted")
	}
}
