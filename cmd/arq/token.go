package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/arqonbus/arqonbus/auth"
)

func runToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	tenant := fs.String("tenant", "", "tenant id (required)")
	var user string
	fs.StringVar(&user, "user", "", "user id, the token's sub claim (required)")
	fs.StringVar(&user, "sub", "", "alias of --user")
	role := fs.String("role", "", "role claim")
	var caps capFlag
	fs.Var(&caps, "cap", "a capability, repeatable: sub:PATTERN, pub:PATTERN, presence:PATTERN (e.g. --cap 'sub:chat.>' --cap 'pub:chat.*.msg')")
	fs.Var(capsCSV{&caps}, "capabilities", "comma-separated capabilities (same as several --cap)")
	noCaps := fs.Bool("no-caps", false, "an empty capabilities claim: the token may do nothing")
	ttl := fs.Duration("ttl", time.Hour, "lifetime (positive)")
	secretFile := fs.String("secret-file", "", "HS256 secret file (default "+auth.DevSecretPath+" in the working directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	if *tenant == "" || user == "" {
		return errors.New("token: --tenant and --user are required")
	}
	if *ttl <= 0 {
		return fmt.Errorf("token: --ttl must be positive, not %v", *ttl)
	}
	if *noCaps && len(caps) > 0 {
		return errors.New("token: --no-caps with --cap")
	}
	if _, err := auth.CompileCapabilities(caps, false); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	secret, err := loadSecret(*secretFile)
	if err != nil {
		return err
	}
	o := auth.MintOptions{Tenant: *tenant, User: user, Role: *role, TTL: *ttl, Capabilities: caps}
	if *noCaps {
		o.Capabilities = []string{}
	}
	tok, err := auth.Mint(secret, o)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

// capFlag collects repeated --cap values.
type capFlag []string

func (c *capFlag) String() string { return strings.Join(*c, ",") }
func (c *capFlag) Set(v string) error {
	if v == "" {
		return errors.New("empty capability")
	}
	*c = append(*c, v)
	return nil
}

// capsCSV is --capabilities a,b: several --cap at once.
type capsCSV struct{ c *capFlag }

func (x capsCSV) String() string {
	if x.c == nil {
		return ""
	}
	return x.c.String()
}
func (x capsCSV) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if err := x.c.Set(strings.TrimSpace(s)); err != nil {
			return err
		}
	}
	return nil
}

// loadSecret reads the secret file, or the dev secret (creating it, as
// arq serve would, so arq token works before the first serve).
func loadSecret(path string) ([]byte, error) {
	if path != "" {
		return auth.ReadSecret(path)
	}
	s, _, err := auth.LoadOrCreateDevSecret(auth.DevSecretPath)
	return s, err
}

func randomNodeID() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "node-" + hex.EncodeToString(b)
}
