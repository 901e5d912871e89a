package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/policy"
)

var policyEngine *policy.Engine

// setupPolicy loads the Wasm policies named by the config into gcfg.
func setupPolicy(ctx context.Context, cfg *Config, gcfg *gateway.Config, reg prometheus.Registerer, log *slog.Logger) error {
	def := policy.AllowAll
	if cfg.Policy.Default != "" {
		var err error
		if def, err = policy.ParseDefaultAction(cfg.Policy.Default); err != nil {
			return fmt.Errorf("config: policy.default: %w", err)
		}
	}
	timeout, err := parseDuration("policy.timeout", cfg.Policy.Timeout)
	if err != nil {
		return err
	}
	if cfg.Policy.Dir == "" && def == policy.AllowAll {
		return nil // nothing to ask: the gateway allows all
	}
	e, err := policy.New(ctx, policy.Config{
		Dir: cfg.Policy.Dir, Default: def, Timeout: timeout, Registerer: reg, Logger: log,
	})
	if err != nil {
		return err
	}
	policyEngine = e
	gcfg.Policy = e
	log.Info("policies loaded", "dir", cfg.Policy.Dir, "default", cfg.Policy.Default, "modules", len(e.Policies()))
	return nil
}

func closePolicy(ctx context.Context) {
	if policyEngine != nil {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_ = policyEngine.Close(c)
	}
}
