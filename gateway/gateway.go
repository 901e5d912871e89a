// Package gateway is ArqonBus's edge: it terminates client WebSockets on a
// netpoll event loop, authenticates them at the upgrade, decodes frames
// (Protobuf in binary frames, JSON in text frames), validates subjects,
// routes publishes to local subscribers through router and to other nodes
// through spine, and delivers what other nodes publish.
//
// Files by subject: the bus operations on an identity (bus.go: Publish,
// subscribe, unsubscribe, leave, with OpError and its sentinels), the
// WebSocket's use of them (conn.go, handlers.go, upgrade.go), presence's
// gateway half (presence.go: the node's stream to the brains, events to
// local members, queries), what backends and operators call without a
// connection (admin.go: Disconnect, Presence, Info), wss:// beside netpoll
// (tls.go), the write path (outbound.go, writer.go, writev.go) and
// rate-limited event logging (eventlog.go).
//
// There is no goroutine per connection. netpoll calls onRequest when bytes
// arrive; a connection's state is a small struct. A connection's outbound
// frames sit in a bounded queue; connections with queued frames are written
// by a few writer goroutines (one per P), one writev per connection per
// round, so writes coalesce across publishes as load grows and leave at
// once when the node is idle (writer.go). Only a connection whose socket is
// full gets a goroutine of its own, until its queue drains.
//
// Callback order for one connection:
//
//	netpoll accept -> onPrepare (conn struct, close callback)
//	bytes arrive  -> onRequest -> handshake bytes buffered until the request
//	                              is complete, then upgrade + auth + WELCOME
//	bytes arrive  -> onRequest -> complete frames handled in place; a partial
//	                              frame is copied to a pooled buffer
//	peer/user close -> close callback -> subscriptions removed, buffers freed
//
// Locks: a registry shard lock and conn.mu are never held together
// (registry.each copies a shard before visiting it); conn.mu is never held
// while calling into router or spine; a writer shard's lock is taken under
// conn.mu, never the other way round; presence.mu is never held while
// enqueueing to a connection.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/policy"
	"github.com/arqonbus/arqonbus/router"
	"github.com/arqonbus/arqonbus/spine"
)

// Errors returned by the gateway.
var (
	ErrNoVerifier = errors.New("gateway: Config.Verifier is required")
	ErrClosed     = errors.New("gateway: closed")
)

// Config configures a Gateway. Zero fields mean the defaults shown.
type Config struct {
	// Listen address; default "127.0.0.1:8080". Ignored by Serve(ln).
	Listen string
	// NodeID names this node in WELCOME frames and envelopes; default random.
	NodeID string
	// Verifier checks tokens at the upgrade. Required.
	Verifier *auth.Verifier
	// Spine links this node to the others; nil keeps traffic local.
	Spine *spine.Spine
	// Policy decides connect, subscribe and publish; nil allows all.
	Policy *policy.Engine
	// Registerer receives the gateway's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger

	// MaxFrameBytes bounds one frame's payload and one reassembled
	// message; default 1 MiB.
	MaxFrameBytes int
	// MaxSubscriptions per connection; default 1024.
	MaxSubscriptions int
	// OutboundBufferBytes bounds a connection's queued output; default 1 MiB.
	OutboundBufferBytes int
	// PublishRate is the sustained publishes per second a connection may
	// make; default 10000; negative means no limit. A publish beyond it gets
	// RATE_LIMIT_EXCEEDED and is not routed.
	PublishRate float64
	// PublishBurst is how many publishes may come at once; default
	// PublishRate/5 (at least 1).
	PublishBurst int
	// DropOnSlowConsumer drops messages for a full connection instead of
	// closing it with SLOW_CONSUMER.
	DropOnSlowConsumer bool
	// KeepExpiredSessions keeps a connection open after its token's exp.
	// By default the sweep closes it (ERROR AUTHENTICATION_FAILED, close
	// 1008 "token expired") once exp plus auth.Leeway has passed, so a
	// short-lived token bounds how long a session lasts, as nats-server
	// does with expiring user JWTs.
	KeepExpiredSessions bool
	// HeartbeatInterval: the server pings a connection silent this long;
	// default 25s.
	HeartbeatInterval time.Duration
	// IdleTimeout closes a connection silent this long; default
	// 2*HeartbeatInterval + 10s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the upgrade request; default 10s.
	HandshakeTimeout time.Duration
	// FrameTimeout bounds the time a started frame may take to arrive
	// whole; default 15s.
	FrameTimeout time.Duration
	// WriteTimeout bounds one blocked write; default 10s.
	WriteTimeout time.Duration
	// MaxWriteDelay bounds how long a writer under heavy load (above
	// 200k frames/s per writer) spaces its rounds so that frames for a
	// connection coalesce into fewer writes (writer.go); default 40ms;
	// negative: never wait (writes still coalesce while a writer is
	// busy). Process-wide: the writers serve every Gateway of the
	// process, and the last New with a non-zero value sets it.
	MaxWriteDelay time.Duration
	// ReusePort sets SO_REUSEPORT on the listener so several processes can
	// share the port (a host group).
	ReusePort bool
	// SweepInterval is how often deadlines are checked; default 1s.
	SweepInterval time.Duration
	// Presence configures presence (presence.go); it needs Spine.
	Presence PresenceConfig
	// RequireCapabilities: a token without a capabilities claim may do
	// nothing (by default it may do everything in its tenant). See
	// capabilities.go.
	RequireCapabilities bool
	// PersonalPrefix turns on personal subjects <prefix>.<user>.>, readable
	// only by that user unless capabilities grant them (capabilities.go);
	// "" (default): off.
	PersonalPrefix string
	// AllowedOrigins are the browser origins an upgrade may come from
	// (origin.go); empty: any.
	AllowedOrigins []string
	// DemoFS, when set, is served to plain HTTP GETs of "/" (index.html)
	// and "/demo/..." on the WebSocket listener (static.go); nil: off.
	DemoFS fs.FS
	// DemoToken, when set, answers GET /demo/token?user=NAME with a
	// short-lived token (serve sets it only in the dev default on
	// loopback); nil: 404.
	DemoToken func(user string) (string, error)
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.NodeID == "" {
		c.NodeID = "node-" + nuid.Next()[:10]
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 1 << 20
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 1024
	}
	if c.PublishRate == 0 {
		c.PublishRate = 10000
	}
	if c.PublishRate > 0 && c.PublishBurst <= 0 {
		c.PublishBurst = max(1, int(c.PublishRate/5))
	}
	if c.OutboundBufferBytes <= 0 {
		c.OutboundBufferBytes = 1 << 20
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 25 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2*c.HeartbeatInterval + 10*time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
}

// Gateway serves client WebSockets. Create with New, run with Serve.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	router  *router.Router[*conn]
	spine   *spine.Spine
	metrics *metrics
	reg     registry
	events  eventLog // rate-limited event lines (eventlog.go)

	// presence is nil without a spine or with presence disabled; members
	// is the same component as the bus operations' observer.
	presence *presence
	members  memberObserver
	ctlSub   *nats.Subscription // other nodes' disconnect commands
	infoSub  *nats.Subscription // other nodes' info requests

	// policyDefault is the engine's answer where no policy applies.
	policyDefault policy.Decision
	// origins are Config.AllowedOrigins compiled; nil: any.
	origins []originPattern

	clock    atomic.Int64 // coarse Unix nanoseconds, updated by the sweeper
	seq      atomic.Uint64
	draining atomic.Bool

	mu     sync.Mutex
	loop   netpoll.EventLoop
	ln     net.Listener
	tlsLn  net.Listener // ServeTLS's public listener, or nil
	stop   chan struct{}
	closed bool
	done   sync.WaitGroup
}

var configureOnce sync.Once

// tuneNetpoll sets netpoll's buffer sizes so that an idle connection holds
// no buffer at all.
//
// Input: netpoll reads into nodes of Config.BufferSize bytes (more once a
// read fills its node). After a read is consumed (Reader.Release with no
// unread input), it replaces the tail node with an empty one only when the
// connection's buffer size is above the page size; otherwise it keeps the
// node, so every connection that ever read would hold one. A size above a
// page makes the read node go back to netpoll's allocator after every
// consumed read: buffers live only while a frame is in flight.
//
// Output: the gateway writes with writev itself (writev.go), so netpoll's
// output buffer is used only when a socket is full; LinkBufferCap bounds
// the node it then keeps.
func tuneNetpoll() {
	configureOnce.Do(func() {
		netpoll.LinkBufferCap = 512
		_ = netpoll.Configure(netpoll.Config{BufferSize: readBufferBytes})
	})
}

// readBufferBytes is netpoll's read node size: above the page size (see
// tuneNetpoll) and a size class of its allocator.
const readBufferBytes = 16 << 10

// New returns a Gateway. It does not listen yet.
func New(cfg Config) (*Gateway, error) {
	if cfg.Verifier == nil {
		return nil, ErrNoVerifier
	}
	cfg.setDefaults()
	origins, err := compileOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	if cfg.PersonalPrefix != "" && (strings.ContainsAny(cfg.PersonalPrefix, ".*>") || router.ValidateSubject(cfg.PersonalPrefix) != nil) {
		return nil, fmt.Errorf("gateway: personal prefix %q must be one subject token", cfg.PersonalPrefix)
	}
	tuneNetpoll()
	g := &Gateway{
		cfg:    cfg,
		log:    cfg.Logger,
		router: router.New[*conn](router.Config{}),
		spine:  cfg.Spine,
		stop:   make(chan struct{}),
	}
	if len(cfg.AllowedOrigins) > 0 {
		g.origins = origins
	}
	g.reg.init()
	g.events.log = cfg.Logger
	if cfg.MaxWriteDelay != 0 {
		sched.maxDelay.Store(int64(cfg.MaxWriteDelay))
	}
	g.metrics = newMetrics(g)
	if cfg.Registerer != nil {
		if err := g.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("gateway: metrics: %w", err)
		}
	}
	g.clock.Store(time.Now().UnixNano())
	if cfg.Policy != nil {
		// No tenant can be named "\x00": this asks for the default.
		g.policyDefault = cfg.Policy.Decide(context.Background(),
			&pb.PolicyRequest{Action: pb.PolicyAction_POLICY_ACTION_PUBLISH, Tenant: "\x00"})
	}
	if g.spine != nil {
		g.spine.SetHandler(g.deliverRemote)
	}
	if g.spine != nil {
		ctl, err := g.spine.Conn().Subscribe(g.spine.Prefix()+".$ctl.disconnect", func(m *nats.Msg) { g.onDisconnectCommand(m.Data) })
		if err != nil {
			return nil, fmt.Errorf("gateway: control subscription: %w", err)
		}
		g.ctlSub = ctl
		info, err := g.spine.Conn().Subscribe(g.spine.Prefix()+".$ctl.info", g.onInfoRequest)
		if err != nil {
			return nil, fmt.Errorf("gateway: control subscription: %w", err)
		}
		g.infoSub = info
	}
	if g.spine != nil && !cfg.Presence.Disabled {
		p, err := newPresence(g, cfg.Presence)
		if err != nil {
			return nil, fmt.Errorf("gateway: presence: %w", err)
		}
		if cfg.Registerer != nil {
			for _, c := range p.m.collectors() {
				if err := cfg.Registerer.Register(c); err != nil {
					p.close()
					return nil, fmt.Errorf("gateway: metrics: %w", err)
				}
			}
		}
		g.presence, g.members = p, p
	}
	return g, nil
}

// NodeID returns this node's id.
func (g *Gateway) NodeID() string { return g.cfg.NodeID }

// Listen opens the configured listen address (with SO_REUSEPORT when
// configured).
func (g *Gateway) Listen() (net.Listener, error) {
	lc := net.ListenConfig{}
	if g.cfg.ReusePort {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return lc.Listen(context.Background(), "tcp", g.cfg.Listen)
}

// Serve accepts WebSocket connections on ln until Shutdown. It returns
// once the event loop is running; the loop's error is logged.
func (g *Gateway) Serve(ln net.Listener) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	nln, err := netpoll.ConvertListener(ln)
	if err != nil {
		return fmt.Errorf("gateway: listener: %w", err)
	}
	loop, err := netpoll.NewEventLoop(g.onRequest,
		netpoll.WithOnPrepare(g.onPrepare),
		netpoll.WithWriteTimeout(g.cfg.WriteTimeout),
	)
	if err != nil {
		return fmt.Errorf("gateway: event loop: %w", err)
	}
	g.loop, g.ln = loop, nln
	g.done.Add(2)
	go func() {
		defer g.done.Done()
		if err := loop.Serve(nln); err != nil && !g.draining.Load() {
			g.log.Error("gateway: event loop stopped", "err", err)
		}
	}()
	go func() {
		defer g.done.Done()
		g.sweep()
	}()
	return nil
}

// Addr returns the listening address, or nil before Serve.
func (g *Gateway) Addr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln == nil {
		return nil
	}
	return g.ln.Addr()
}

// Connections returns the number of open connections.
func (g *Gateway) Connections() int { return g.reg.count() }

// Ready reports whether the gateway accepts traffic and its spine is up.
func (g *Gateway) Ready() bool {
	if g.draining.Load() {
		return false
	}
	return g.spine == nil || g.spine.Ready()
}

// Shutdown drains the node: new upgrades are refused, every client is told
// to go (close 1001), queued output is flushed until ctx expires, then the
// listener and remaining connections are closed.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	loop := g.loop
	tlsLn := g.tlsLn
	g.mu.Unlock()
	g.draining.Store(true)
	if tlsLn != nil {
		_ = tlsLn.Close() // relays of open connections end with them
	}
	g.reg.each(func(c *conn) {
		c.closeReason(reasonShutdown)
		c.goAway(closeGoingAway, "server shutting down")
	})
	for g.reg.count() > 0 {
		select {
		case <-ctx.Done():
			g.reg.each(func(c *conn) { c.closeNow() })
			goto stopLoop
		case <-time.After(20 * time.Millisecond):
		}
	}
stopLoop:
	if g.ctlSub != nil {
		_ = g.ctlSub.Unsubscribe()
		_ = g.infoSub.Unsubscribe()
	}
	if g.presence != nil {
		g.presence.close() // the drained connections' leaves go out
	}
	close(g.stop)
	var err error
	if loop != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = loop.Shutdown(sctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			err = nil
		}
	}
	g.done.Wait()
	return err
}

// now returns the coarse clock (Unix nanoseconds, at most SweepInterval/10 old).
func (g *Gateway) now() int64 { return g.clock.Load() }
