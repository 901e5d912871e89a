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
	sub := fs.String("sub", "", "user id, the sub claim (required)")
	role := fs.String("role", "", "role claim")
	caps := fs.String("capabilities", "", "comma-separated capabilities")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	secretFile := fs.String("secret-file", "", "HS256 secret file (default "+auth.DevSecretPath+" in the working directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenant == "" || *sub == "" {
		return errors.New("token: --tenant and --sub are required")
	}
	secret, err := loadSecret(*secretFile)
	if err != nil {
		return err
	}
	o := auth.MintOptions{Tenant: *tenant, User: *sub, Role: *role, TTL: *ttl}
	if *caps != "" {
		o.Capabilities = strings.Split(*caps, ",")
	}
	tok, err := auth.Mint(secret, o)
	if err != nil {
		return err
	}
	fmt.Println(tok)
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
