package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/arqonbus/arqonbus/api"
)

// devAPIKey is the dev default's admin API key, derived from the dev
// secret, so it is stable across restarts and needs no file of its own.
func devAPIKey(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("arqonbus dev api key"))
	return "dev-" + hex.EncodeToString(m.Sum(nil))[:40]
}

// apiKeys reads the configured keys (inline or from files).
func apiKeys(cfg APIConfig) ([]api.Key, error) {
	var keys []api.Key
	for i, k := range cfg.Keys {
		secret := k.Key
		if k.KeyFile != "" {
			if secret != "" {
				return nil, fmt.Errorf("config: api.keys[%d] (%s): key and key_file are exclusive", i, k.Name)
			}
			b, err := os.ReadFile(k.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("config: api.keys[%d] (%s): %w", i, k.Name, err)
			}
			secret = strings.TrimSpace(string(b))
		}
		keys = append(keys, api.Key{Name: k.Name, Secret: secret, Tenant: k.Tenant})
	}
	return keys, nil
}

var errAPINoKeys = errors.New("config: api.enabled needs at least one [[api.keys]]")
