// Package spine carries published messages between gateway nodes over NATS.
//
// Each message travels as a pb.Envelope (marshaled with vtprotobuf) on the
// NATS subject "<prefix>.<tenant>.<subject>". A node listens only for the
// tenants it has local subscribers in (one NATS subscription per tenant,
// "<prefix>.<tenant>.>", so a message reaches a node at most once), and
// skips envelopes it originated: its local fan-out already happened.
//
// With no URL configured, New starts an embedded nats-server in the process
// and connects to it in-process, so a single node needs no external service.
package spine

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/pool"
)

// Errors returned by the spine.
var (
	ErrClosed       = errors.New("spine: closed")
	ErrNotConnected = errors.New("spine: not connected to NATS")
)

// Config configures a Spine. Zero fields mean defaults.
type Config struct {
	// URL of an external NATS server or cluster ("nats://host:4222,...").
	// Empty starts an embedded nats-server.
	URL string
	// Prefix of every NATS subject; default "arq".
	Prefix string
	// NodeID identifies this gateway node in envelopes (origin_node).
	NodeID string
	// EmbeddedListen, with an embedded server, also listens for NATS
	// clients on this address ("127.0.0.1:4222"); empty means in-process only.
	EmbeddedListen string
	// Name of the NATS connection; default "arq-gateway-<NodeID>".
	Name string
	// Logger; default slog.Default().
	Logger *slog.Logger

	// Credentials for an external NATS: User and Password, or an nkey
	// seed file, or a creds file (JWT + seed). A URL may also carry
	// user:password.
	User         string
	Password     string
	NKeySeedFile string
	CredsFile    string
	// CAFile makes the connection TLS, verifying the server against this
	// CA (PEM).
	CAFile string

	// With EmbeddedListen, the embedded server requires credentials:
	// account BUS with the users "gateway" (publish and subscribe under
	// "<prefix>.>" and "_INBOX.>") and "brain" (only the brain's
	// "<prefix>.$brain.>", "<prefix>.$presence.>" and "_INBOX.>"), as
	// deploy/nats/nats.conf defines them, and a separate system account.
	// These are their passwords; empty ones are generated.
	EmbeddedGatewayPassword string
	EmbeddedBrainPassword   string
}

// Users of the embedded server's BUS account.
const (
	GatewayUser = "gateway"
	BrainUser   = "brain"
	busAccount  = "BUS"
)

// Handler receives envelopes from other nodes. env and its byte slices are
// valid only during the call.
//
// The envelopes of one tenant arrive from one goroutine, in order, each
// with that tenant's Burst. While burst.More is true further envelopes of
// the tenant are already waiting, so a handler may hold work back (the
// gateway holds its socket writes, so that a burst leaves in one write per
// connection) and do it on a later call: the stream always ends with a call
// whose More is false, and a call with env == nil (More false) releases
// what is held when envelopes turn out not to be deliverable or the
// tenant's subscription ends.
type Handler func(env *pb.Envelope, burst *Burst)

// A Burst is the state of one tenant's stream of envelopes, passed to every
// Handler call for that tenant.
type Burst struct {
	// More reports that more of the tenant's envelopes are waiting.
	More bool
	// State is the handler's own, kept between its calls for the tenant
	// (the spine never touches it).
	State any
}

// Stats counts what the spine did.
type Stats struct {
	Published     atomic.Uint64
	PublishErrors atomic.Uint64
	Received      atomic.Uint64
	DecodeErrors  atomic.Uint64
	SkippedOwn    atomic.Uint64
	Unheard       atomic.Uint64 // publishes not sent: no other node listens (embedded server only)
	Dropped       atomic.Uint64 // NATS slow-consumer drops reported to us
}

// Spine is one node's connection to the bus. Safe for concurrent use.
type Spine struct {
	cfg      Config
	log      *slog.Logger
	embedded *server.Server
	nc       *nats.Conn
	handler  atomic.Pointer[Handler]
	Stats    Stats

	mu      sync.Mutex // guards tenants
	tenants map[string]*tenantSub
	closed  bool

	// With the embedded server, Publish asks it whether anyone but this
	// node listens (acc, the server's account), and skips the message
	// when nobody does: on a single node every publish would otherwise go
	// through the NATS client and server for no reader. watched holds the
	// tenants this node subscribes for (copy-on-write, under mu), whose
	// own subscription Publish discounts.
	acc     *server.Account
	watched atomic.Pointer[map[string]struct{}]
}

type tenantSub struct {
	refs  int
	sub   *nats.Subscription
	ready chan struct{} // closed once the server holds the interest
	burst Burst         // used only by the subscription's delivery goroutine
}

// New connects to NATS (starting the embedded server when cfg.URL is empty).
func New(cfg Config) (*Spine, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "arq"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "arq-gateway-" + cfg.NodeID
	}
	s := &Spine{cfg: cfg, log: cfg.Logger, tenants: make(map[string]*tenantSub)}
	if cfg.EmbeddedListen != "" {
		if s.cfg.EmbeddedGatewayPassword == "" {
			s.cfg.EmbeddedGatewayPassword = nuid.Next() + nuid.Next()
		}
		if s.cfg.EmbeddedBrainPassword == "" {
			s.cfg.EmbeddedBrainPassword = nuid.Next() + nuid.Next()
		}
		cfg = s.cfg
	}
	creds, err := cfg.credentials(GatewayUser, cfg.EmbeddedGatewayPassword)
	if err != nil {
		return nil, err
	}
	opts := append(baseOptions(cfg.Name),
		nats.NoEcho(), // the server never hands a node its own publishes
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it
				s.log.Warn("spine: disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			s.log.Info("spine: reconnected to NATS", "url", c.ConnectedUrl())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				s.Stats.Dropped.Add(1)
				return
			}
			s.log.Warn("spine: NATS error", "err", err)
		}),
	)
	opts = append(opts, creds...)
	if cfg.URL == "" {
		s.embedded, err = startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.InProcessServer(s.embedded))
		s.nc, err = nats.Connect("", opts...)
		s.acc = s.embedded.GlobalAccount()
		if cfg.EmbeddedListen != "" {
			if s.acc, err = s.embedded.LookupAccount(busAccount); err != nil {
				s.embedded.Shutdown()
				return nil, fmt.Errorf("spine: embedded NATS: %w", err)
			}
		}
	} else {
		opts = append(opts, nats.RetryOnFailedConnect(true))
		s.nc, err = nats.Connect(cfg.URL, opts...)
	}
	if err != nil {
		if s.embedded != nil {
			s.embedded.Shutdown()
		}
		return nil, fmt.Errorf("spine: connect: %w", err)
	}
	return s, nil
}

func startEmbedded(cfg Config) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "arq-embedded-" + cfg.NodeID,
		NoSigs:     true,
		NoLog:      true,
		DontListen: cfg.EmbeddedListen == "",
		MaxPayload: 8 << 20,
	}
	if cfg.EmbeddedListen != "" {
		host, port, err := splitHostPort(cfg.EmbeddedListen)
		if err != nil {
			return nil, fmt.Errorf("spine: embedded listen address: %w", err)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
		// Reachable from other processes: credentials and permissions.
		bus, sys := server.NewAccount(busAccount), server.NewAccount("SYSTEM")
		p := cfg.Prefix
		allow := func(subjects ...string) *server.Permissions {
			return &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: subjects},
				Subscribe: &server.SubjectPermission{Allow: subjects},
			}
		}
		opts.Accounts = []*server.Account{bus, sys}
		opts.SystemAccount = "SYSTEM"
		opts.Users = []*server.User{
			{Username: GatewayUser, Password: cfg.EmbeddedGatewayPassword, Account: bus,
				Permissions: allow(p+".>", "_INBOX.>")},
			{Username: BrainUser, Password: cfg.EmbeddedBrainPassword, Account: bus,
				Permissions: allow(p+".$brain.>", p+".$presence.>", "_INBOX.>")},
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("spine: embedded NATS: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("spine: embedded NATS did not start")
	}
	return ns, nil
}

// SetHandler installs the function that receives other nodes' envelopes.
func (s *Spine) SetHandler(h Handler) { s.handler.Store(&h) }

// Subject returns the NATS subject for tenant and subject, appended to dst.
func (s *Spine) Subject(dst []byte, tenant, subject string) []byte {
	dst = append(dst, s.cfg.Prefix...)
	dst = append(dst, '.')
	dst = append(dst, tenant...)
	dst = append(dst, '.')
	return append(dst, subject...)
}

// Publish sends env to the other nodes. It sets env.OriginNode. The bytes
// are copied into the NATS connection's buffer before Publish returns.
func (s *Spine) Publish(env *pb.Envelope) error {
	env.OriginNode = s.cfg.NodeID
	n := env.SizeVT()
	subjLen := len(s.cfg.Prefix) + len(env.Tenant) + len(env.Subject) + 2
	buf := pool.Get(subjLen + n)
	defer buf.Release()
	subj := s.Subject(buf.B[:0], env.Tenant, env.Subject)
	if s.acc != nil && !s.othersListen(env.Tenant, b2s(subj)) {
		s.Stats.Unheard.Add(1)
		return nil
	}
	body := buf.B[subjLen : subjLen+n]
	if _, err := env.MarshalToSizedBufferVT(body); err != nil {
		s.Stats.PublishErrors.Add(1)
		return fmt.Errorf("spine: marshal: %w", err)
	}
	if err := s.nc.Publish(b2s(subj), body); err != nil {
		s.Stats.PublishErrors.Add(1)
		return fmt.Errorf("spine: publish: %w", err)
	}
	s.Stats.Published.Add(1)
	return nil
}

// othersListen reports whether a subscription other than this node's own
// matches subj (tenant's), on the embedded server. A Watch or Unwatch in
// progress can only make it say yes (see Watch and Unwatch), never hide a
// listener.
func (s *Spine) othersListen(tenant, subj string) bool {
	n := s.acc.Interest(subj)
	if w := s.watched.Load(); w != nil {
		if _, ok := (*w)[tenant]; ok {
			n-- // this node's own subscription for the tenant
		}
	}
	return n > 0
}

// setWatched adds or removes tenant in the watched set. Assumes s.mu held.
func (s *Spine) setWatched(tenant string, on bool) {
	old := s.watched.Load()
	m := make(map[string]struct{}, len(s.tenants))
	if old != nil {
		for k := range *old {
			m[k] = struct{}{}
		}
	}
	if on {
		m[tenant] = struct{}{}
	} else {
		delete(m, tenant)
	}
	s.watched.Store(&m)
}

// Watch registers interest in tenant's messages from other nodes. Calls are
// counted; the NATS subscription exists while the count is above zero.
func (s *Spine) Watch(tenant string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if t := s.tenants[tenant]; t != nil {
		t.refs++
		s.mu.Unlock()
		<-t.ready // the first Watch's round trip, not a second one
		return nil
	}
	subj := s.cfg.Prefix + "." + tenant + ".>"
	t := &tenantSub{refs: 1, ready: make(chan struct{})}
	sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) { s.onMsg(t, m) })
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("spine: subscribe %s: %w", subj, err)
	}
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	// nats.go calls this from the delivery goroutine once it has stopped
	// (after Unsubscribe or when the connection closes): the handler gets
	// its last call there, to release what it held.
	sub.SetClosedHandler(func(string) { s.endBurst(t) })
	t.sub = sub
	s.tenants[tenant] = t
	s.mu.Unlock()
	defer close(t.ready)
	// A round trip makes sure the server holds the interest before the
	// caller acknowledges the subscription to its client. While NATS is
	// away nats.go replays the subscription on reconnect.
	if s.nc.IsConnected() && s.nc.FlushTimeout(2*time.Second) == nil {
		// The server holds the subscription now: from here Publish may
		// discount it (before, it would not, and errs towards sending).
		s.mu.Lock()
		if s.tenants[tenant] == t {
			s.setWatched(tenant, true)
		}
		s.mu.Unlock()
	}
	return nil
}

// Unwatch drops one Watch of tenant.
func (s *Spine) Unwatch(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tenants[tenant]
	if t == nil {
		return
	}
	t.refs--
	if t.refs <= 0 {
		// Before the subscription goes: Publish stops discounting it
		// while it still counts, so it errs towards sending.
		s.setWatched(tenant, false)
		_ = t.sub.Unsubscribe()
		delete(s.tenants, tenant)
	}
}

// WatchedTenants reports how many tenants this node listens for.
func (s *Spine) WatchedTenants() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tenants)
}

// onMsg decodes and checks one message of tenant subscription t and hands
// it to the handler. Runs on t's delivery goroutine.
func (s *Spine) onMsg(t *tenantSub, m *nats.Msg) {
	// Pending counts the message being delivered until this call returns.
	n, _, err := m.Sub.Pending()
	t.burst.More = err == nil && n > 1
	var env pb.Envelope
	if !s.accept(m, &env) {
		if !t.burst.More {
			s.endBurst(t)
		}
		return
	}
	s.Stats.Received.Add(1)
	if h := s.handler.Load(); h != nil {
		(*h)(&env, &t.burst)
	}
}

// accept decodes m into env and reports whether it is a deliverable
// envelope from another node.
func (s *Spine) accept(m *nats.Msg, env *pb.Envelope) bool {
	if err := env.UnmarshalVTUnsafe(m.Data); err != nil {
		s.Stats.DecodeErrors.Add(1)
		return false
	}
	// The tenant is the one this node subscribed for (the NATS subject),
	// never only what the envelope claims.
	if !s.subjectMatches(m.Subject, env) {
		s.Stats.DecodeErrors.Add(1)
		return false
	}
	if env.OriginNode == s.cfg.NodeID {
		s.Stats.SkippedOwn.Add(1)
		return false
	}
	return true
}

// endBurst gives the handler its releasing call (env nil, More false) for
// t. Runs on t's delivery goroutine.
func (s *Spine) endBurst(t *tenantSub) {
	t.burst.More = false
	if h := s.handler.Load(); h != nil {
		(*h)(nil, &t.burst)
	}
}

// subjectMatches checks that a NATS subject is "<prefix>.<env.Tenant>.<env.Subject>".
func (s *Spine) subjectMatches(subj string, env *pb.Envelope) bool {
	p, t := s.cfg.Prefix, env.Tenant
	return len(subj) == len(p)+len(t)+len(env.Subject)+2 &&
		subj[:len(p)] == p && subj[len(p)] == '.' &&
		subj[len(p)+1:len(p)+1+len(t)] == t && subj[len(p)+1+len(t)] == '.' &&
		subj[len(p)+len(t)+2:] == env.Subject
}

// Ready reports whether the NATS connection is up.
func (s *Spine) Ready() bool {
	return s.nc != nil && s.nc.IsConnected()
}

// Flush waits until NATS has processed everything published so far.
func (s *Spine) Flush(timeout time.Duration) error {
	return s.nc.FlushTimeout(timeout)
}

// EmbeddedURL returns the client URL of the embedded server when it
// listens on a port, or "". It carries no credentials: see
// EmbeddedGatewayURL.
func (s *Spine) EmbeddedURL() string {
	if s.embedded == nil || s.cfg.EmbeddedListen == "" {
		return ""
	}
	return s.embedded.ClientURL()
}

// EmbeddedGatewayURL is EmbeddedURL with the gateway user's credentials
// in it, for other nodes (and tests) in the same trust domain.
func (s *Spine) EmbeddedGatewayURL() string {
	return s.urlWith(GatewayUser, s.cfg.EmbeddedGatewayPassword)
}

// EmbeddedBrainURL is EmbeddedURL with the brain user's credentials.
func (s *Spine) EmbeddedBrainURL() string {
	return s.urlWith(BrainUser, s.cfg.EmbeddedBrainPassword)
}

func (s *Spine) urlWith(user, password string) string {
	u := s.EmbeddedURL()
	if u == "" {
		return ""
	}
	return strings.Replace(u, "nats://", "nats://"+user+":"+password+"@", 1)
}

// credentials returns the connection options for c's credentials; with
// a protected embedded server, user's (in process).
func (c Config) credentials(user, embeddedPassword string) ([]nats.Option, error) {
	var opts []nats.Option
	if c.URL == "" {
		if c.EmbeddedListen != "" {
			opts = append(opts, nats.UserInfo(user, embeddedPassword))
		}
		return opts, nil
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("spine: nkey seed %s: %w", c.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if c.CredsFile != "" {
		if _, err := os.Stat(c.CredsFile); err != nil {
			return nil, fmt.Errorf("spine: creds file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.CAFile != "" {
		if _, err := os.Stat(c.CAFile); err != nil {
			return nil, fmt.Errorf("spine: CA file: %w", err)
		}
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	return opts, nil
}

// Reconnects reports how many times the NATS connection reconnected.
func (s *Spine) Reconnects() uint64 { return s.nc.Stats().Reconnects }

// Prefix returns the prefix of every NATS subject of the bus.
func (s *Spine) Prefix() string { return s.cfg.Prefix }

// NewConn opens another NATS connection to the spine's server (in process
// for the embedded one) with the spine's reconnect settings, as the brain
// user of a protected embedded server, else with the spine's credentials.
// The brain uses one of its own: the spine's connection does not receive
// its own publishes (NoEcho).
func (s *Spine) NewConn(name string) (*nats.Conn, error) {
	if s.embedded == nil {
		return Dial(s.cfg, name)
	}
	creds, err := s.cfg.credentials(BrainUser, s.cfg.EmbeddedBrainPassword)
	if err != nil {
		return nil, err
	}
	opts := append(baseOptions(name), creds...)
	return nats.Connect("", append(opts, nats.InProcessServer(s.embedded))...)
}

// Dial connects to the external NATS at cfg.URL with cfg's credentials
// and the spine's reconnect settings: the connection of a brain that runs
// on its own.
func Dial(cfg Config, name string) (*nats.Conn, error) {
	if cfg.URL == "" {
		return nil, errors.New("spine: Dial needs a NATS URL")
	}
	creds, err := cfg.credentials("", "")
	if err != nil {
		return nil, err
	}
	opts := append(baseOptions(name), creds...)
	return nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(true))...)
}

// baseOptions are the settings of every spine connection: reconnect
// forever with backoff and jitter, and a bounded reconnect buffer.
func baseOptions(name string) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(8 << 20),
	}
}

// Conn exposes the NATS connection (for the brain and admin tooling).
func (s *Spine) Conn() *nats.Conn { return s.nc }

// Close drains the NATS connection and stops the embedded server.
func (s *Spine) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	if s.nc != nil {
		_ = s.nc.FlushTimeout(2 * time.Second)
		s.nc.Close()
	}
	if s.embedded != nil {
		s.embedded.Shutdown()
		s.embedded.WaitForShutdown()
	}
}
