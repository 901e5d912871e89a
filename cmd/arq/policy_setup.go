package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/gateway"
)

// setupPolicy loads Wasm policies into the gateway config (see policy/).
func setupPolicy(_ context.Context, cfg *Config, _ *gateway.Config, _ prometheus.Registerer, log *slog.Logger) error {
	if cfg.Policy.Dir != "" {
		log.Warn("policy.dir is set but this build has no policy engine yet", "dir", cfg.Policy.Dir)
	}
	return nil
}

func closePolicy(context.Context) {}
