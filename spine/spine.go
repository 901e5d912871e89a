// Package spine carries published messages between gateway nodes over NATS.
//
// Each message travels as a pb.Envelope (marshaled with vtprotobuf) on the
// NATS subject "<prefix>.<tenant>.<subject>". A node subscribes on NATS
// for each pattern its local clients subscribe to ("<prefix>.<tenant>.<pattern>",
// reference counted: added with the first local subscriber, removed after
// the last), so it receives only the messages it has a reader for; with
// Config.Interest "tenant" it subscribes once per tenant instead
// ("<prefix>.<tenant>.>"). All of a node's subscriptions are in one NATS
// queue group of its own, so NATS hands the node one copy of a message
// however many of its patterns match. The envelopes of one tenant are
// delivered to the Handler in arrival order, on one goroutine.
//
// A publish no other node listens for is not sent at all: the nodes tell
// each other their patterns (interest.go), with an external NATS as well as
// the embedded server.
//
// With no URL configured, New starts an embedded nats-server in the process
// and connects to it in-process, so a single node needs no external service.
package spine

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"runtime"
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
	// NoRandomize tries the servers of URL in the order given (e.g. the
	// node's own NATS first) instead of shuffling them.
	NoRandomize bool
	// Linger is how long a pattern's NATS subscription (and the interest
	// announced for it) outlives its last local subscriber: a client that
	// reconnects and resubscribes within it costs NATS and the other nodes
	// nothing. Default 2s; negative: removed at once. Messages that arrive
	// meanwhile find no local subscriber and are dropped by the router.
	Linger time.Duration
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

	// Interest is how the node subscribes on NATS: InterestSubject (the
	// default: one subscription per subscribed pattern) or InterestTenant
	// (one per tenant: fewer NATS subscriptions for tenants with very many
	// patterns, at the price of receiving all of the tenant's traffic).
	Interest string
	// HeartbeatInterval of the interest protocol (default 1s); InterestTTL
	// after which a silent node is forgotten (default 15 intervals: a long
	// TTL only sends a dead node's patterns a little longer, a short one
	// could forget a live node that is slow to beat);
	// AckTimeout is how long a pattern's first subscriber waits for the
	// other nodes to acknowledge the new interest (default 1s; a node
	// that is away answers when it has synced again).
	HeartbeatInterval time.Duration
	InterestTTL       time.Duration
	AckTimeout        time.Duration
	// InboundQueue bounds the messages from NATS waiting for the handler,
	// per delivery shard (one shard per CPU, up to 16; default 16384).
	// Beyond it NATS messages are dropped and counted as slow-consumer drops.
	InboundQueue int
}

// Interest modes (Config.Interest).
const (
	InterestSubject = "subject"
	InterestTenant  = "tenant"
)

// Users of the embedded server's BUS account.
const (
	GatewayUser = "gateway"
	BrainUser   = "brain"
	busAccount  = "BUS"
)

// Handler receives envelopes from other nodes. env and its byte slices are
// valid only during the call. The envelopes of one tenant arrive from one
// goroutine, in the order NATS delivered them.
type Handler func(env *pb.Envelope)

// Stats counts what the spine did.
type Stats struct {
	Published     atomic.Uint64
	PublishErrors atomic.Uint64
	Received      atomic.Uint64
	DecodeErrors  atomic.Uint64
	SkippedOwn    atomic.Uint64
	Unheard       atomic.Uint64 // publishes not sent: no other node listens
	Dropped       atomic.Uint64 // NATS slow-consumer events reported to us
	// LostDisconnected counts publishes lost because NATS was away and
	// the reconnect buffer (8 MiB) was full (also in PublishErrors).
	LostDisconnected atomic.Uint64
}

// Spine is one node's connection to the bus. Safe for concurrent use.
type Spine struct {
	cfg      Config
	log      *slog.Logger
	embedded *server.Server
	nc       *nats.Conn
	handler  atomic.Pointer[Handler]
	Stats    Stats

	// patterns holds the node's NATS subscriptions by subject, in
	// shards: a reconnect storm subscribes and unsubscribes tens of
	// thousands of patterns a second from many goroutines, and one lock
	// around the NATS calls made them queue (spine.go's history).
	patterns [patternShards]patternShard
	tenantMu sync.Mutex
	tenants  map[string]int // local patterns per tenant
	closed   atomic.Bool

	// queue is this process's NATS queue group: every subscription of the
	// node is in it, so NATS delivers a message to the node once even when
	// several of its patterns match.
	queue string
	// shards carry NATS messages to the handler, one goroutine each; a
	// tenant always uses the same shard, so its order holds.
	shards   []chan *nats.Msg
	shardsWG sync.WaitGroup
	stop     chan struct{}

	interest  *interest
	dropped   atomic.Uint64 // messages of subscriptions that are gone
	lingering atomic.Int64  // patterns with no local subscriber, kept for Config.Linger
}

// patternShards is the number of locks over the pattern table.
const patternShards = 64

// patternShard is one lock's part of the pattern table.
type patternShard struct {
	mu   sync.Mutex
	subs map[string]*patternSub // by NATS subject
	// idle lists the subjects whose count reached zero, lingering (some
	// may be in use again: the reaper skips those).
	idle []string
	_    [16]byte // a cache line each
}

// patternShard returns subj's part of the pattern table.
func (s *Spine) patternShard(subj string) *patternShard {
	return &s.patterns[maphash.String(patternSeed, subj)%patternShards]
}

var patternSeed = maphash.MakeSeed()

// countTenant adds d to tenant's local pattern count.
func (s *Spine) countTenant(tenant string, d int) {
	s.tenantMu.Lock()
	if s.tenants[tenant] += d; s.tenants[tenant] <= 0 {
		delete(s.tenants, tenant)
	}
	s.tenantMu.Unlock()
}

// patternSub is the NATS subscription for one (tenant, pattern).
type patternSub struct {
	tenant, pattern string
	refs            int
	idleSince       int64 // Unix nanoseconds the count reached zero (lingering)
	listed          bool  // in its shard's idle list
	sub             *nats.Subscription
	ready           chan struct{} // closed once the other nodes know of the interest
	err             error         // set before ready closes when subscribing failed
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
	switch cfg.Interest {
	case "":
		cfg.Interest = InterestSubject
	case InterestSubject, InterestTenant:
	default:
		return nil, fmt.Errorf("spine: interest %q: want %q or %q", cfg.Interest, InterestSubject, InterestTenant)
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = time.Second
	}
	if cfg.InboundQueue <= 0 {
		cfg.InboundQueue = 16384
	}
	switch {
	case cfg.Linger == 0:
		cfg.Linger = 2 * time.Second
	case cfg.Linger < 0:
		cfg.Linger = 0
	}
	s := &Spine{cfg: cfg, log: cfg.Logger,
		tenants: make(map[string]int), queue: "arq-node-" + nuid.Next(), stop: make(chan struct{})}
	for i := range s.patterns {
		s.patterns[i].subs = make(map[string]*patternSub)
	}
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
			if in := s.interest; in != nil {
				in.open.Store(false) // send everything until warm again
			}
			if err != nil { // nil: we closed it
				s.log.Warn("spine: disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			if in := s.interest; in != nil {
				in.reconnected()
			}
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
	} else {
		opts = append(opts, nats.RetryOnFailedConnect(true))
		if cfg.NoRandomize {
			opts = append(opts, nats.DontRandomize())
		}
		s.nc, err = nats.Connect(cfg.URL, opts...)
	}
	if err != nil {
		if s.embedded != nil {
			s.embedded.Shutdown()
		}
		return nil, fmt.Errorf("spine: connect: %w", err)
	}
	n := min(max(runtime.GOMAXPROCS(0), 1), 16)
	for range n {
		ch := make(chan *nats.Msg, cfg.InboundQueue)
		s.shards = append(s.shards, ch)
		s.shardsWG.Add(1)
		go s.deliver(ch)
	}
	if cfg.Linger > 0 {
		s.shardsWG.Add(1)
		go s.reap()
	}
	// An embedded server that does not listen can have no other node.
	s.interest = newInterest(s, cfg.URL == "" && cfg.EmbeddedListen == "")
	if err := s.interest.start(); err != nil {
		s.Close()
		return nil, fmt.Errorf("spine: interest protocol: %w", err)
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
		BusAuth(opts, cfg.Prefix, cfg.EmbeddedGatewayPassword, cfg.EmbeddedBrainPassword)
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

// BusAuth sets the accounts, users and permissions of the bus on a
// nats-server's options, as deploy/nats/nats.conf defines them for prefix:
// account BUS with the users "gateway" (publish and subscribe under
// "<prefix>.>" and "_INBOX.>") and "brain" (only "<prefix>.$brain.>",
// "<prefix>.$presence.>" and "_INBOX.>"), and a separate system account
// SYSTEM. The protected embedded server uses it, and so do the tests' and
// the load generator's NATS servers.
func BusAuth(opts *server.Options, prefix, gatewayPassword, brainPassword string) {
	bus, sys := server.NewAccount(busAccount), server.NewAccount("SYSTEM")
	allow := func(subjects ...string) *server.Permissions {
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: subjects},
			Subscribe: &server.SubjectPermission{Allow: subjects},
		}
	}
	opts.Accounts = []*server.Account{bus, sys}
	opts.SystemAccount = "SYSTEM"
	opts.Users = []*server.User{
		{Username: GatewayUser, Password: gatewayPassword, Account: bus,
			Permissions: allow(prefix+".>", "_INBOX.>")},
		{Username: BrainUser, Password: brainPassword, Account: bus,
			Permissions: allow(prefix+".$brain.>", prefix+".$presence.>", "_INBOX.>")},
	}
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
	if !s.interest.mayReach(env.Tenant, env.Subject) {
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
		if errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrConnectionClosed) {
			s.Stats.LostDisconnected.Add(1)
		}
		return fmt.Errorf("spine: publish: %w", err)
	}
	s.Stats.Published.Add(1)
	return nil
}

// Watch registers interest in tenant's messages on pattern from other
// nodes (pattern is ignored with InterestTenant). Calls are counted per
// (tenant, pattern); the NATS subscription exists while the count is above
// zero. The first Watch of a pattern returns once the other nodes know of
// it (or Config.AckTimeout passed), so a message published after it returns
// is not skipped for want of a listener.
func (s *Spine) Watch(tenant, pattern string) error {
	if s.cfg.Interest == InterestTenant {
		pattern = ">"
	}
	subj := s.cfg.Prefix + "." + tenant + "." + pattern
	sh := s.patternShard(subj)
	sh.mu.Lock()
	if s.closed.Load() {
		sh.mu.Unlock()
		return ErrClosed
	}
	if p := sh.subs[subj]; p != nil {
		if p.refs == 0 {
			s.lingering.Add(-1) // back in use before the reaper came
		}
		p.refs++
		sh.mu.Unlock()
		<-p.ready // the first Watch's wait, not a second one
		return p.err
	}
	p := &patternSub{tenant: tenant, pattern: pattern, refs: 1, ready: make(chan struct{})}
	sub, err := s.nc.ChanQueueSubscribe(subj, s.queue, s.shardOf(tenant))
	if err != nil {
		p.err = fmt.Errorf("spine: subscribe %s: %w", subj, err)
		close(p.ready)
		sh.mu.Unlock()
		return p.err
	}
	p.sub = sub
	sh.subs[subj] = p
	s.countTenant(tenant, 1)
	wait := s.interest.add(tenant, pattern) // under the shard's lock: queued in order with the pattern's removal
	sh.mu.Unlock()
	wait()
	close(p.ready)
	return nil
}

// Unwatch drops one Watch of (tenant, pattern).
func (s *Spine) Unwatch(tenant, pattern string) {
	if s.cfg.Interest == InterestTenant {
		pattern = ">"
	}
	subj := s.cfg.Prefix + "." + tenant + "." + pattern
	sh := s.patternShard(subj)
	sh.mu.Lock()
	p := sh.subs[subj]
	if p == nil {
		sh.mu.Unlock()
		return
	}
	if p.refs == 0 {
		sh.mu.Unlock()
		return // already lingering: one Unwatch too many
	}
	p.refs--
	if p.refs > 0 {
		sh.mu.Unlock()
		return
	}
	if s.cfg.Linger > 0 {
		p.idleSince = time.Now().UnixNano()
		if !p.listed {
			p.listed = true
			sh.idle = append(sh.idle, subj)
		}
		s.lingering.Add(1)
		sh.mu.Unlock()
		return
	}
	delete(sh.subs, subj)
	s.interest.remove(tenant, pattern)
	sh.mu.Unlock()
	s.drop(p)
}

// drop ends a pattern's NATS subscription (already out of the table).
func (s *Spine) drop(p *patternSub) {
	s.countTenant(p.tenant, -1)
	if d, err := p.sub.Dropped(); err == nil && d > 0 {
		s.dropped.Add(uint64(d))
	}
	_ = p.sub.Unsubscribe()
}

// reap is the goroutine that removes patterns that lingered for
// Config.Linger unused.
func (s *Spine) reap() {
	defer s.shardsWG.Done()
	t := time.NewTicker(max(s.cfg.Linger/4, 50*time.Millisecond))
	defer t.Stop()
	var gone []*patternSub
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			before := now.UnixNano() - int64(s.cfg.Linger)
			for i := range s.patterns {
				gone = s.patterns[i].reap(s, before, gone[:0])
				for _, p := range gone {
					s.drop(p)
				}
			}
		}
	}
}

// reap takes out of the table the shard's patterns unused since before,
// announcing their removal, and returns them (appended to gone).
func (sh *patternShard) reap(s *Spine, before int64, gone []*patternSub) []*patternSub {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	keep := sh.idle[:0]
	for _, subj := range sh.idle {
		p := sh.subs[subj]
		switch {
		case p == nil || p.refs > 0:
			if p != nil {
				p.listed = false
			}
		case p.idleSince > before:
			keep = append(keep, subj) // lingering still
		default:
			delete(sh.subs, subj)
			s.interest.remove(p.tenant, p.pattern)
			s.lingering.Add(-1)
			gone = append(gone, p)
		}
	}
	clear(sh.idle[len(keep):])
	sh.idle = keep
	return gone
}

// WatchedTenants reports how many tenants this node listens for.
func (s *Spine) WatchedTenants() int {
	s.tenantMu.Lock()
	defer s.tenantMu.Unlock()
	return len(s.tenants)
}

// Lingering reports how many of Subscriptions have no local subscriber
// and wait for Config.Linger to pass.
func (s *Spine) Lingering() int { return int(s.lingering.Load()) }

// Subscriptions reports how many NATS subscriptions carry this node's
// interest (one per watched pattern, or per tenant), lingering ones
// included.
func (s *Spine) Subscriptions() int {
	n := 0
	s.eachShard(func(sh *patternShard) { n += len(sh.subs) })
	return n
}

// DroppedMessages reports how many messages NATS handed this node that were
// dropped because its inbound queue was full.
func (s *Spine) DroppedMessages() uint64 {
	var n uint64
	s.eachShard(func(sh *patternShard) {
		for _, p := range sh.subs {
			if d, err := p.sub.Dropped(); err == nil {
				n += uint64(d)
			}
		}
	})
	return n + s.dropped.Load()
}

// eachShard runs f on every part of the pattern table, under its lock.
func (s *Spine) eachShard(f func(sh *patternShard)) {
	for i := range s.patterns {
		sh := &s.patterns[i]
		sh.mu.Lock()
		f(sh)
		sh.mu.Unlock()
	}
}

// InterestStats describes what this node knows of the other nodes.
type InterestStats struct {
	Nodes        int    // other nodes known
	Entries      int    // their (tenant, pattern) entries
	AckTimeouts  uint64 // first subscribers acknowledged without every node's answer
	Syncs        uint64 // snapshots requested
	DecodeErrors uint64 // protocol messages that were not understood
	Open         bool   // publishes nobody listens to are skipped (else all are sent)
}

// Interest returns the interest protocol's state.
func (s *Spine) Interest() InterestStats {
	in := s.interest
	return InterestStats{
		Nodes: int(in.nodeCount.Load()), Entries: int(in.entryCount.Load()),
		AckTimeouts: in.ackTimeouts.Load(), Syncs: in.syncs.Load(),
		DecodeErrors: in.decodeErrors.Load(), Open: in.open.Load(),
	}
}

// shardOf returns the delivery shard of tenant.
func (s *Spine) shardOf(tenant string) chan *nats.Msg {
	h := uint32(2166136261)
	for i := 0; i < len(tenant); i++ {
		h = (h ^ uint32(tenant[i])) * 16777619
	}
	return s.shards[h%uint32(len(s.shards))]
}

// deliver hands the messages of one shard to the handler, in order.
func (s *Spine) deliver(ch chan *nats.Msg) {
	defer s.shardsWG.Done()
	for {
		select {
		case m := <-ch:
			s.onMsg(m)
		case <-s.stop:
			return
		}
	}
}

// onMsg decodes and checks one message and hands it to the handler. Runs
// on its shard's goroutine.
func (s *Spine) onMsg(m *nats.Msg) {
	var env pb.Envelope
	if !s.accept(m, &env) {
		return
	}
	s.Stats.Received.Add(1)
	if h := s.handler.Load(); h != nil {
		(*h)(&env)
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
	if cfg.NoRandomize {
		opts = append(opts, nats.DontRandomize())
	}
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
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	if s.interest != nil {
		s.interest.close()
	}
	if s.nc != nil {
		_ = s.nc.FlushTimeout(2 * time.Second)
		s.nc.Close()
	}
	close(s.stop)
	s.shardsWG.Wait()
	if s.embedded != nil {
		s.embedded.Shutdown()
		s.embedded.WaitForShutdown()
	}
}
