package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/arqonbus/arqonbus/api"
	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/brain"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/spine"
	"github.com/arqonbus/arqonbus/web"
)

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "WebSocket listen address (default 127.0.0.1:8080)")
	admin := fs.String("admin", "", "admin listen address for /metrics, /healthz, /readyz, /debug/pprof (default 127.0.0.1:9090)")
	natsURL := fs.String("nats", "", "external NATS URL (default: embedded server)")
	cfgPath := fs.String("config", "", "TOML config file")
	nodeID := fs.String("node-id", "", "node id (default random)")
	policyDir := fs.String("policy-dir", "", "directory of Wasm policies")
	reusePort := fs.Bool("reuse-port", false, "set SO_REUSEPORT so several processes share the listen port")
	valkey := fs.String("valkey", "", "keep presence in Valkey at this address (default: in memory)")
	embeddedListen := fs.String("embedded-nats-listen", "", "let other nodes reach the embedded NATS server at this address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Server.Listen, *listen)
	set(&cfg.Server.Admin, *admin)
	set(&cfg.NATS.URL, *natsURL)
	set(&cfg.NodeID, *nodeID)
	set(&cfg.Policy.Dir, *policyDir)
	set(&cfg.NATS.EmbeddedListen, *embeddedListen)
	set(&cfg.Brain.Valkey, *valkey)
	if *reusePort {
		cfg.Server.ReusePort = true
	}
	if cfg.Server.Listen == "" {
		cfg.Server.Listen = "127.0.0.1:8080"
	}
	if cfg.Server.Admin == "" {
		cfg.Server.Admin = "127.0.0.1:9090"
	}
	log, err := newLogger(cfg.Server)
	if err != nil {
		return err
	}
	slog.SetDefault(log)

	var tlsCfg *tls.Config
	if cfg.Server.TLSCert != "" || cfg.Server.TLSKey != "" {
		if cfg.Server.TLSCert == "" || cfg.Server.TLSKey == "" {
			return errors.New("config: server.tls_cert and server.tls_key go together")
		}
		cert, err := tls.LoadX509KeyPair(cfg.Server.TLSCert, cfg.Server.TLSKey)
		if err != nil {
			return fmt.Errorf("config: server.tls_cert / tls_key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// Off loopback, the gateway's listener needs TLS: its own (tls_cert)
	// or a terminator in front; the admin listener always the latter.
	public := !isLoopback(cfg.Server.Listen) || !isLoopback(cfg.Server.Admin)
	plaintextOff := (!isLoopback(cfg.Server.Listen) && tlsCfg == nil) || !isLoopback(cfg.Server.Admin)
	if plaintextOff && !cfg.Server.TLSTerminated {
		return fmt.Errorf("%w: listen %s / admin %s is not a loopback address; put a TLS terminator in front and set server.tls_terminated_upstream = true", errInsecure, cfg.Server.Listen, cfg.Server.Admin)
	}

	if cfg.Server.GOGC != 0 {
		old := debug.SetGCPercent(cfg.Server.GOGC)
		log.Info("gc target set", "gogc", cfg.Server.GOGC, "was", old)
	}
	limit, err := raiseFileLimit()
	if err != nil {
		log.Warn("could not raise the open-file limit", "err", err)
	}
	log.Info("open-file limit", "nofile", limit)

	var secret []byte
	devSecret := false
	created := false
	if cfg.Auth.SecretFile != "" {
		secret, err = auth.ReadSecret(cfg.Auth.SecretFile)
		if err != nil {
			return err
		}
	} else if cfg.Auth.usesIdentityProvider() {
		// Tokens come from identity providers only: no HS256 secret.
	} else {
		if public {
			return fmt.Errorf("%w: a non-loopback listener needs auth.secret_file, not the dev secret", errInsecure)
		}
		secret, created, err = auth.LoadOrCreateDevSecret(auth.DevSecretPath)
		if err != nil {
			return err
		}
		devSecret = true
	}
	acfg, err := verifierConfig(cfg.Auth, secret)
	if err != nil {
		return err
	}
	verifier, err := auth.NewVerifierConfig(acfg)
	if err != nil {
		return err
	}
	defer verifier.Close()

	gcfg := gateway.Config{
		Listen:              cfg.Server.Listen,
		NodeID:              cfg.NodeID,
		Verifier:            verifier,
		RequireCapabilities: cfg.Auth.RequireCapabilities,
		PersonalPrefix:      cfg.Auth.PersonalPrefix,
		AllowedOrigins:      cfg.Server.AllowedOrigins,
		Logger:              log,
		MaxFrameBytes:       cfg.Limits.MaxFrameBytes,
		MaxSubscriptions:    cfg.Limits.MaxSubscriptions,
		OutboundBufferBytes: cfg.Limits.OutboundBufferBytes,
		DropOnSlowConsumer:  cfg.Limits.DropOnSlowConsumer,
		PublishRate:         cfg.Limits.PublishRate,
		PublishBurst:        cfg.Limits.PublishBurst,
		ReusePort:           cfg.Server.ReusePort,
		KeepExpiredSessions: cfg.Server.KeepExpiredSessions,
	}
	for _, d := range []struct {
		name string
		s    string
		dst  *time.Duration
	}{
		{"server.heartbeat_interval", cfg.Server.Heartbeat, &gcfg.HeartbeatInterval},
		{"server.idle_timeout", cfg.Server.Idle, &gcfg.IdleTimeout},
		{"server.handshake_timeout", cfg.Server.Handshake, &gcfg.HandshakeTimeout},
		{"server.frame_timeout", cfg.Server.Frame, &gcfg.FrameTimeout},
		{"server.write_timeout", cfg.Server.Write, &gcfg.WriteTimeout},
		{"brain.heartbeat_interval", cfg.Brain.Heartbeat, &gcfg.Presence.HeartbeatInterval},
	} {
		if *d.dst, err = parseDuration(d.name, d.s); err != nil {
			return err
		}
	}
	gcfg.Presence.Disabled = cfg.Brain.Presence != nil && !*cfg.Brain.Presence
	if cfg.Server.MaxWriteDelay != "" {
		d, err := time.ParseDuration(cfg.Server.MaxWriteDelay)
		if err != nil {
			return fmt.Errorf("config: server.max_write_delay: invalid duration %q", cfg.Server.MaxWriteDelay)
		}
		if d == 0 {
			d = -1 // 0 means "never wait" here, not "the default"
		}
		gcfg.MaxWriteDelay = d
	}
	if gcfg.NodeID == "" {
		gcfg.NodeID = randomNodeID()
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nodeInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "arq_node_info", Help: "Always 1; the node's id and version as labels."},
		[]string{"node_id", "version"})
	nodeInfo.WithLabelValues(gcfg.NodeID, version).Set(1)
	reg.MustRegister(nodeInfo)
	gcfg.Registerer = reg

	scfg := spine.Config{
		URL: cfg.NATS.URL, Prefix: cfg.NATS.Prefix, NodeID: gcfg.NodeID,
		EmbeddedListen: cfg.NATS.EmbeddedListen, Logger: log,
		Interest: cfg.NATS.Interest, NoRandomize: cfg.NATS.NoRandomize,
	}
	if scfg.HeartbeatInterval, err = parseDuration("nats.interest_heartbeat", cfg.NATS.InterestHeartbeat); err != nil {
		return err
	}
	if scfg.Linger, err = parseDuration("nats.linger", cfg.NATS.Linger); err != nil {
		return err
	}
	if scfg.Linger == 0 && cfg.NATS.Linger != "" {
		scfg.Linger = -1 // "0s": none
	}
	if err := spineCredentials(cfg.NATS, &scfg, spine.GatewayUser); err != nil {
		return err
	}
	sp, err := spine.New(scfg)
	if err != nil {
		return err
	}
	defer sp.Close()
	gcfg.Spine = sp

	var br *brain.Brain
	brainDesc := "elsewhere (brain.enabled = false)"
	if cfg.Brain.enabled() {
		store, kind, err := openStore(cfg.Brain)
		if err != nil {
			return err
		}
		defer store.Close()
		nc, err := sp.NewConn("arq-brain-" + gcfg.NodeID)
		if err != nil {
			return fmt.Errorf("brain: nats: %w", err)
		}
		defer nc.Close()
		bcfg, err := brainConfig(cfg.Brain, nc, sp.Prefix(), store, reg, log)
		if err != nil {
			return err
		}
		if br, err = brain.New(bcfg); err != nil {
			return err
		}
		defer br.Close()
		brainDesc = "in process, " + kind
	}

	if err := setupPolicy(context.Background(), cfg, &gcfg, reg, log); err != nil {
		return err
	}

	// The demo page (web/demo) on the WebSocket listener: on in the dev
	// default or with server.demo = true; its token endpoint only in the
	// dev default on loopback (never with a configured secret).
	demoOn := devSecret
	if cfg.Server.Demo != nil {
		demoOn = *cfg.Server.Demo
	}
	if demoOn {
		gcfg.DemoFS = web.Demo()
		if devSecret && !public && isLoopback(cfg.Server.Listen) {
			gcfg.DemoToken = func(user string) (string, error) {
				return auth.Mint(secret, auth.MintOptions{Tenant: "demo", User: user, TTL: 10 * time.Minute})
			}
		}
	}

	gw, err := gateway.New(gcfg)
	if err != nil {
		return err
	}
	ln, err := gw.Listen()
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Server.Listen, err)
	}
	if tlsCfg != nil {
		err = gw.ServeTLS(ln, tlsCfg)
	} else {
		err = gw.Serve(ln)
	}
	if err != nil {
		return err
	}

	// The server API: on by default only in the dev default, with an
	// admin key derived from the dev secret.
	var apiSrv *api.Server
	apiOn := devSecret
	if cfg.API.Enabled != nil {
		apiOn = *cfg.API.Enabled
	}
	apiKey := ""
	if apiOn {
		keys, err := apiKeys(cfg.API)
		if err != nil {
			return err
		}
		if devSecret && len(keys) == 0 {
			apiKey = devAPIKey(secret)
			keys = append(keys, api.Key{Name: "dev", Secret: apiKey})
		}
		if len(keys) == 0 {
			return errAPINoKeys
		}
		if apiSrv, err = api.New(api.Config{Gateway: gw, Keys: keys, Registerer: reg, Logger: log}); err != nil {
			return err
		}
	}
	if cfg.API.NATS {
		natsAPI, err := api.ServeNATS(sp.Conn(), sp.Prefix(), gw, apiSrv)
		if err != nil {
			return err
		}
		defer natsAPI.Unsubscribe()
	}
	var apiLn net.Listener
	if apiSrv != nil && cfg.API.Listen != "" {
		if !isLoopback(cfg.API.Listen) && !cfg.Server.TLSTerminated {
			return fmt.Errorf("%w: api.listen %s is not a loopback address", errInsecure, cfg.API.Listen)
		}
		if apiLn, err = net.Listen("tcp", cfg.API.Listen); err != nil {
			return fmt.Errorf("api listen %s: %w", cfg.API.Listen, err)
		}
		apiHTTP := &http.Server{Handler: apiSrv, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := apiHTTP.Serve(apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("api server stopped", "err", err)
			}
		}()
		defer apiHTTP.Close()
	}

	adminLn, err := net.Listen("tcp", cfg.Server.Admin)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", cfg.Server.Admin, err)
	}
	ready := func() (bool, string) {
		if !gw.Ready() {
			return false, "gateway draining or NATS disconnected"
		}
		if br != nil && !br.Ready() {
			return false, "presence store unavailable"
		}
		return true, ""
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arq_ready", Help: "1 while /readyz answers ready (not draining, NATS connected, presence store reachable)."},
		func() float64 {
			if ok, _ := ready(); ok {
				return 1
			}
			return 0
		}))
	mux := adminMux(reg, ready)
	addAdminPage(mux, adminPageConfig{gw: gw, reg: reg, ready: ready, brain: brainDesc,
		token: cfg.Server.AdminToken, started: time.Now()})
	if apiSrv != nil && apiLn == nil {
		mux.Handle("/api/", apiSrv)
	}
	adminSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin server stopped", "err", err)
		}
	}()

	wsURL := "ws://" + ln.Addr().String() + gateway.SocketPath
	if tlsCfg != nil {
		wsURL = "wss://" + ln.Addr().String() + gateway.SocketPath
	}
	fmt.Printf("ArqonBus node %s serving\n", gw.NodeID())
	fmt.Printf("  websocket: %s\n", wsURL)
	if gcfg.DemoFS != nil {
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
		}
		fmt.Printf("  demo:      %s://%s/\n", scheme, ln.Addr())
	}
	fmt.Printf("  admin:     http://%s/metrics  /healthz  /readyz  /debug/pprof/\n", adminLn.Addr())
	fmt.Printf("  admin page: http://%s/\n", adminLn.Addr())
	if url := sp.EmbeddedURL(); url != "" {
		fmt.Printf("  nats:      %s (embedded; users gateway and brain, passwords in %s and %s)\n", url, natsGatewayPasswordPath, natsBrainPasswordPath)
	} else if cfg.NATS.URL == "" {
		fmt.Printf("  nats:      embedded, in-process\n")
	} else {
		fmt.Printf("  nats:      %s\n", cfg.NATS.URL)
	}
	fmt.Printf("  brain:     %s\n", brainDesc)
	switch {
	case apiSrv != nil && apiLn != nil:
		fmt.Printf("  api:       http://%s/api/v1/\n", apiLn.Addr())
	case apiSrv != nil:
		fmt.Printf("  api:       http://%s/api/v1/\n", adminLn.Addr())
	}
	if apiKey != "" {
		fmt.Printf("  api key:   %s (dev admin key, every tenant; derived from the dev secret)\n", apiKey)
	}
	if devSecret {
		state := "reused"
		if created {
			state = "created"
		}
		tok, err := auth.Mint(secret, auth.MintOptions{Tenant: "dev", User: "dev-user", TTL: 24 * time.Hour})
		if err != nil {
			return err
		}
		fmt.Printf("  dev secret: %s (%s; for development only)\n", auth.DevSecretPath, state)
		fmt.Printf("  sample token (tenant dev, user dev-user, 24h):\n%s\n", tok)
		fmt.Printf("  try: arq sub 'chat.>'   and   arq pub chat.lobby hello\n")
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	log.Info("draining", "signal", s.String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		log.Warn("gateway shutdown", "err", err)
	}
	_ = adminSrv.Shutdown(ctx)
	closePolicy(ctx)
	log.Info("stopped")
	return nil
}

func adminMux(reg *prometheus.Registry, ready func() (bool, string)) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := ready(); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
