package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/arqonbus/arqonbus/brain"
	"github.com/arqonbus/arqonbus/spine"
)

// openStore returns the presence store the config names: Valkey when an
// address is set, else memory.
func openStore(cfg BrainConfig) (brain.Store, string, error) {
	if cfg.Valkey == "" {
		return brain.NewMemoryStore(), "memory", nil
	}
	vc := brain.ValkeyConfig{Addr: cfg.Valkey, Password: cfg.ValkeyPassword, DB: cfg.ValkeyDB}
	if cfg.ValkeyPasswordFile != "" {
		b, err := os.ReadFile(cfg.ValkeyPasswordFile)
		if err != nil {
			return nil, "", fmt.Errorf("config: brain.valkey_password_file: %w", err)
		}
		vc.Password = strings.TrimSpace(string(b))
	}
	if cfg.ValkeyCAFile != "" {
		pem, err := os.ReadFile(cfg.ValkeyCAFile)
		if err != nil {
			return nil, "", fmt.Errorf("config: brain.valkey_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("config: brain.valkey_ca_file %s: no PEM certificate", cfg.ValkeyCAFile)
		}
		host, _, _ := net.SplitHostPort(cfg.Valkey)
		vc.TLS = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	}
	s, err := brain.NewValkeyStore(vc)
	if err != nil {
		return nil, "", fmt.Errorf("brain: valkey %s: %w", cfg.Valkey, err)
	}
	return s, "valkey " + cfg.Valkey, nil
}

// brainConfig builds a brain.Config from the TOML section.
func brainConfig(cfg BrainConfig, nc *nats.Conn, prefix string, store brain.Store, reg prometheus.Registerer, log *slog.Logger) (brain.Config, error) {
	ttl, err := parseDuration("brain.node_ttl", cfg.NodeTTL)
	if err != nil {
		return brain.Config{}, err
	}
	return brain.Config{Conn: nc, Prefix: prefix, Store: store, NodeTTL: ttl, Registerer: reg, Logger: log}, nil
}

// runBrain is "arq brain": a brain on its own, with an admin listener.
func runBrain(args []string) error {
	fs := flag.NewFlagSet("brain", flag.ContinueOnError)
	natsURL := fs.String("nats", "", "NATS URL of the bus (required)")
	valkey := fs.String("valkey", "", "Valkey address (host:port); empty keeps presence in memory (one brain only)")
	admin := fs.String("admin", "127.0.0.1:9091", "admin listen address for /metrics, /healthz, /readyz, /debug/pprof")
	prefix := fs.String("prefix", "", "NATS subject prefix of the bus (default arq)")
	cfgPath := fs.String("config", "", "TOML config file (its [brain] and [nats] sections)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *natsURL != "" {
		cfg.NATS.URL = *natsURL
	}
	if *valkey != "" {
		cfg.Brain.Valkey = *valkey
	}
	if *prefix != "" {
		cfg.NATS.Prefix = *prefix
	}
	if cfg.NATS.URL == "" {
		return errors.New("brain: --nats URL is required (a brain joins a running bus)")
	}
	if !isLoopback(*admin) && !cfg.Server.TLSTerminated {
		return fmt.Errorf("%w: admin %s is not a loopback address", errInsecure, *admin)
	}
	log, err := newLogger(cfg.Server)
	if err != nil {
		return err
	}
	slog.SetDefault(log)

	store, kind, err := openStore(cfg.Brain)
	if err != nil {
		return err
	}
	defer store.Close()
	var sc spine.Config
	if err := spineCredentials(cfg.NATS, &sc, spine.BrainUser); err != nil {
		return err
	}
	sc.URL, sc.NoRandomize = cfg.NATS.URL, cfg.NATS.NoRandomize
	nc, err := spine.Dial(sc, "arq-brain")
	if err != nil {
		return fmt.Errorf("brain: nats: %w", err)
	}
	defer nc.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bcfg, err := brainConfig(cfg.Brain, nc, cfg.NATS.Prefix, store, reg, log)
	if err != nil {
		return err
	}
	br, err := brain.New(bcfg)
	if err != nil {
		return err
	}
	defer br.Close()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_ready", Help: "1 while /readyz answers ready (NATS connected, presence store reachable)."},
		func() float64 {
			if br.Ready() {
				return 1
			}
			return 0
		}))

	ln, err := net.Listen("tcp", *admin)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", *admin, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !br.Ready() {
			http.Error(w, "not ready: NATS or the presence store is unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server stopped", "err", err)
		}
	}()
	fmt.Printf("ArqonBus brain serving\n")
	fmt.Printf("  nats:   %s\n", cfg.NATS.URL)
	fmt.Printf("  store:  %s\n", kind)
	fmt.Printf("  admin:  http://%s/metrics  /healthz  /readyz\n", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	log.Info("stopping", "signal", s.String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return nil
}
