// Package brain keeps presence: which connections are members of which
// room, on every gateway node, and the join and leave events the rooms'
// members receive.
//
// Gateways tell brains over NATS (the spine); a brain never talks to a
// client. Each gateway node publishes one ordered stream of
// pb.PresenceBatch on "<prefix>.$brain.node.<node>": numbered batches of
// joins and leaves, snapshots of its members when asked, and a heartbeat
// every two seconds. Every brain reads every stream and applies it to the
// Store (memory for a single node, Valkey for many); the store applies each
// batch once, whichever brain comes first, so each join and leave is
// published once, on "<prefix>.$presence.<tenant>.<room>", where the
// gateways with members of the room listen. Queries arrive as NATS
// requests on "<prefix>.$brain.query" in the queue group "brain", so
// several brains share them.
//
// What heals what:
//
//	a lost batch        the next batch is a Gap, or a heartbeat's seq is
//	                    ahead of what was applied: the brain asks the node
//	                    for a snapshot ("<prefix>.$brain.sync.<node>")
//	a dead node         no heartbeat for NodeTTL: its members are removed
//	                    and their leaves published (reason "node_down")
//	a restarted node    a larger epoch: its previous life's members are
//	                    removed, never resurrected
//	a store outage      writes retried for StoreRetry, queries answer
//	                    UNAVAILABLE, Ready is false; when the store is back
//	                    (or is found to have lost nodes) every live node is
//	                    asked for a snapshot
//	a brain restart     nothing is lost that the store holds; node timers
//	                    restart from the store's node list
package brain

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/pb"
)

// Errors returned by New.
var (
	ErrNoConn  = errors.New("brain: Config.Conn is required")
	ErrNoStore = errors.New("brain: Config.Store is required")
)

// Config configures a Brain. Zero fields mean the defaults shown.
type Config struct {
	// Conn is the brain's own NATS connection (not a gateway's: a spine
	// connection does not receive its own publishes). Required.
	Conn *nats.Conn
	// Prefix of every NATS subject; default "arq" (the spine's).
	Prefix string
	// Store keeps the state. Required.
	Store Store
	// NodeTTL: a node silent this long is dead; default 6s.
	NodeTTL time.Duration
	// StoreTimeout bounds one store call; default 2s.
	StoreTimeout time.Duration
	// StoreRetry bounds how long a failing join or leave is retried;
	// default 5s. After it, the node is asked for a snapshot once the
	// store is back.
	StoreRetry time.Duration
	// Workers apply node streams in parallel (one node's stream always on
	// the same worker, in order); default 4.
	Workers int
	// QueryConcurrency bounds queries served at once; default 64.
	QueryConcurrency int
	// QueueOps bounds the presence ops decoded and waiting to be applied
	// (default 65536, some tens of MiB). A batch that does not fit waits;
	// NATS then holds the stream up to its own pending limit (64 MiB) and
	// drops beyond it: a gap, which the node repairs with a snapshot.
	QueueOps int
	// Registerer receives the brain's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "arq"
	}
	if c.NodeTTL <= 0 {
		c.NodeTTL = 6 * time.Second
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 2 * time.Second
	}
	if c.StoreRetry <= 0 {
		c.StoreRetry = 5 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.QueryConcurrency <= 0 {
		c.QueryConcurrency = 64
	}
	if c.QueueOps <= 0 {
		c.QueueOps = 65536
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// removeChunk is how many members one RemoveNode call removes.
const removeChunk = 512

// Brain serves presence. Create with New; Close stops it.
type Brain struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	store Store
	m     *metrics

	workers []chan *pb.PresenceBatch
	budget  *opBudget // ops queued on the workers
	subs    []*nats.Subscription
	queries chan struct{} // semaphore

	mu    sync.Mutex // guards nodes
	nodes map[string]*nodeState

	pubBufs sync.Pool // of *eventBufs

	storeUp atomic.Bool
	stop    chan struct{}
	done    sync.WaitGroup
	closed  atomic.Bool
}

// nodeState is what this brain knows of a gateway node.
type nodeState struct {
	epoch     uint64
	lastSeen  time.Time
	applied   uint64 // the highest seq known applied in the store
	syncAsked time.Time
	members   uint32
	removing  bool // its members are being removed
}

// New subscribes the brain to the node streams and the queries and starts
// it.
func New(cfg Config) (*Brain, error) {
	if cfg.Conn == nil {
		return nil, ErrNoConn
	}
	if cfg.Store == nil {
		return nil, ErrNoStore
	}
	cfg.setDefaults()
	b := &Brain{
		cfg:     cfg,
		log:     cfg.Logger,
		nc:      cfg.Conn,
		store:   cfg.Store,
		m:       newMetrics(),
		queries: make(chan struct{}, cfg.QueryConcurrency),
		budget:  newOpBudget(cfg.QueueOps),
		nodes:   make(map[string]*nodeState),
		stop:    make(chan struct{}),
	}
	b.pubBufs.New = func() any { return new(eventBufs) }
	b.m.all = append(b.m.all, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "arq_brain_queued_ops", Help: "Presence ops decoded and waiting to be applied (at most QueueOps)."},
		func() float64 { return float64(b.budget.inUse()) }))
	if cfg.Registerer != nil {
		if err := b.m.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.StoreTimeout)
	b.loadNodes(ctx)
	cancel()
	for range cfg.Workers {
		ch := make(chan *pb.PresenceBatch, 4096)
		b.workers = append(b.workers, ch)
		b.done.Add(1)
		go b.work(ch)
	}
	s1, err := b.nc.Subscribe(cfg.Prefix+".$brain.node.*", b.onBatch)
	if err != nil {
		b.Close()
		return nil, err
	}
	// A brain that falls behind drops (counted by NATS as a slow
	// consumer) rather than growing without bound: a dropped batch is a
	// gap, repaired by a snapshot.
	_ = s1.SetPendingLimits(64<<10, 64<<20)
	b.subs = append(b.subs, s1)
	s2, err := b.nc.QueueSubscribe(cfg.Prefix+".$brain.query", "brain", b.onQuery)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.subs = append(b.subs, s2)
	if err := b.nc.FlushTimeout(cfg.StoreTimeout); err != nil && b.nc.IsConnected() {
		b.log.Warn("brain: flush after subscribing", "err", err)
	}
	b.done.Add(1)
	go b.watch()
	return b, nil
}

// loadNodes arms the timers of the nodes the store knows: each gets a full
// TTL to be heard from.
func (b *Brain) loadNodes(ctx context.Context) {
	nodes, err := b.store.Nodes(ctx)
	if err != nil {
		b.storeUp.Store(false)
		return
	}
	b.storeUp.Store(true)
	now := time.Now()
	b.mu.Lock()
	for _, n := range nodes {
		ns := b.nodeLocked(n.ID)
		if n.Epoch > ns.epoch {
			ns.epoch, ns.applied = n.Epoch, n.Seq
		}
		ns.lastSeen = now
	}
	b.mu.Unlock()
}

// Ready reports whether the brain can serve: NATS connected and the store
// reachable at the last check.
func (b *Brain) Ready() bool {
	return !b.closed.Load() && b.nc.IsConnected() && b.storeUp.Load()
}

// Close stops the brain (the store and the connection are the caller's).
func (b *Brain) Close() {
	if b.closed.Swap(true) {
		return
	}
	for _, s := range b.subs {
		_ = s.Unsubscribe()
	}
	b.budget.close()
	close(b.stop)
	b.done.Wait()
	b.m.unregister()
}

// onBatch decodes a node's batch and queues it on the node's worker.
func (b *Brain) onBatch(m *nats.Msg) {
	pbb := new(pb.PresenceBatch)
	if err := pbb.UnmarshalVT(m.Data); err != nil || pbb.Node == "" ||
		m.Subject != b.cfg.Prefix+".$brain.node."+pbb.Node {
		b.m.errors.WithLabelValues("decode").Inc()
		return
	}
	h := uint32(2166136261) // FNV-1a of the node: its stream stays on one worker
	for i := 0; i < len(pbb.Node); i++ {
		h = (h ^ uint32(pbb.Node[i])) * 16777619
	}
	cost := batchCost(pbb)
	waited, ok := b.budget.take(cost)
	if waited {
		b.m.queueFull.Inc()
	}
	if !ok {
		return // closing
	}
	select {
	case b.workers[h%uint32(len(b.workers))] <- pbb:
	case <-b.stop:
		b.budget.give(cost)
	}
}

func (b *Brain) work(ch chan *pb.PresenceBatch) {
	defer b.done.Done()
	var next *pb.PresenceBatch // taken from ch but not merged: handled next
	var run []*pb.PresenceBatch
	for {
		pbb := next
		next = nil
		if pbb == nil {
			select {
			case pbb = <-ch:
			case <-b.stop:
				return
			}
		}
		if pbb.Heartbeat || pbb.Sync != 0 {
			b.handle(pbb, nil)
			b.budget.give(batchCost(pbb))
			continue
		}
		// The node's next batches that queued meanwhile join this one
		// (one store call for all, up to MaxBatchOps ops): a brain that
		// is behind catches up with bigger calls, not more of them.
		run = append(run[:0], pbb)
		ops := len(pbb.Ops)
	merge:
		for ops < MaxBatchOps {
			select {
			case m := <-ch:
				last := run[len(run)-1]
				if m.Heartbeat || m.Sync != 0 || m.Node != last.Node || m.Epoch != last.Epoch ||
					m.Seq != last.Seq+1 || ops+len(m.Ops) > MaxBatchOps {
					next = m
					break merge
				}
				run = append(run, m)
				ops += len(m.Ops)
			default:
				break merge
			}
		}
		if len(run) > 1 {
			b.m.merged.Add(float64(len(run) - 1))
		}
		b.handle(run[len(run)-1], run)
		cost := 0
		for _, r := range run {
			cost += batchCost(r)
		}
		b.budget.give(cost)
		clear(run)
	}
}

// handle applies a node's batch pbb, or the run of its consecutive
// batches that ends with pbb (run: merged into one store call).
func (b *Brain) handle(pbb *pb.PresenceBatch, run []*pb.PresenceBatch) {
	if pbb.Heartbeat {
		b.heartbeat(pbb)
		return
	}
	b.mu.Lock()
	ns := b.nodeLocked(pbb.Node)
	ns.lastSeen = time.Now()
	b.mu.Unlock()
	if run == nil {
		run = []*pb.PresenceBatch{pbb}
	}
	batch := toBatch(run)
	deadline := time.Now().Add(b.cfg.StoreRetry)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		res, err := b.apply(batch)
		if err == nil {
			if res.Status == EpochChanged {
				if !b.removeNode(pbb.Node, res.OldEpoch, "node_down") {
					return // the store failed: a later snapshot repairs it
				}
				continue
			}
			b.applied(pbb, res)
			return
		}
		if errors.Is(err, ErrInvalidBatch) {
			if len(run) > 1 { // one bad batch must not take its neighbours with it
				for _, part := range run {
					b.handle(part, nil)
				}
				return
			}
			b.m.errors.WithLabelValues("invalid_batch").Inc()
			return
		}
		if time.Now().Add(wait).After(deadline) || b.closed.Load() {
			b.m.errors.WithLabelValues("apply_gave_up").Inc()
			b.log.Warn("brain: presence store failing; node will be resynced", "node", pbb.Node, "err", err)
			b.mu.Lock()
			b.nodeLocked(pbb.Node).applied = 0 // force a snapshot when it is back
			b.mu.Unlock()
			return
		}
		select {
		case <-time.After(wait):
		case <-b.stop:
			return
		}
	}
}

func (b *Brain) apply(batch *Batch) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StoreTimeout)
	defer cancel()
	start := time.Now()
	res, err := b.store.Apply(ctx, batch)
	b.m.storeSeconds.WithLabelValues("apply").Observe(time.Since(start).Seconds())
	if err != nil {
		b.m.errors.WithLabelValues("store").Inc()
	}
	return res, err
}

// applied publishes what an Apply did and records the node's progress.
func (b *Brain) applied(pbb *pb.PresenceBatch, res Result) {
	b.m.batches.WithLabelValues(res.Status.String()).Inc()
	switch res.Status {
	case Applied:
		b.publishChanges(res.Joined, res.Left, res.LeftReasons)
		b.mu.Lock()
		ns := b.nodeLocked(pbb.Node)
		if pbb.Sync == 0 {
			ns.applied = max(ns.applied, pbb.Seq)
		} else if pbb.SyncEnd {
			ns.applied = max(ns.applied, pbb.Sync)
		}
		b.mu.Unlock()
	case Duplicate:
		if pbb.Sync == 0 || pbb.SyncEnd {
			b.mu.Lock()
			ns := b.nodeLocked(pbb.Node)
			ns.applied = max(ns.applied, pbb.Seq, pbb.Sync)
			b.mu.Unlock()
		}
	case Gap:
		b.askSync(pbb.Node, pbb.Epoch)
	case StaleEpoch:
	}
}

// heartbeat records that a node is alive; a node whose stream is ahead of
// what was applied is asked for a snapshot, and a new epoch removes the
// members of the node's previous life.
func (b *Brain) heartbeat(pbb *pb.PresenceBatch) {
	now := time.Now()
	if pbb.SentAt > 0 {
		b.m.heartbeatLag.Observe(max(0, now.Sub(time.Unix(0, pbb.SentAt)).Seconds()))
	}
	b.mu.Lock()
	ns := b.nodeLocked(pbb.Node)
	if pbb.Epoch < ns.epoch {
		b.mu.Unlock()
		return // a previous life's last words
	}
	oldEpoch := uint64(0)
	if pbb.Epoch > ns.epoch {
		oldEpoch = ns.epoch
		ns.epoch, ns.applied = pbb.Epoch, 0
	}
	ns.lastSeen = now
	ns.members = pbb.Members
	behind := pbb.Seq > ns.applied
	b.mu.Unlock()
	b.m.nodeMembers.WithLabelValues(pbb.Node).Set(float64(pbb.Members))
	if oldEpoch != 0 {
		b.removeNode(pbb.Node, oldEpoch, "node_down")
	}
	if behind {
		b.askSync(pbb.Node, pbb.Epoch)
	}
}

// askSync asks a node for a snapshot, at most once a second per node.
func (b *Brain) askSync(node string, epoch uint64) {
	b.mu.Lock()
	ns := b.nodeLocked(node)
	if time.Since(ns.syncAsked) < time.Second {
		b.mu.Unlock()
		return
	}
	ns.syncAsked = time.Now()
	b.mu.Unlock()
	req := pb.SyncRequest{Node: node, Epoch: epoch}
	data, _ := req.MarshalVT()
	if err := b.nc.Publish(b.cfg.Prefix+".$brain.sync."+node, data); err != nil {
		b.m.errors.WithLabelValues("publish").Inc()
		return
	}
	b.m.syncs.Inc()
}

// removeNode removes the members of node's lives up to epoch, in chunks,
// publishing their leaves. It reports whether the store finished.
func (b *Brain) removeNode(node string, epoch uint64, reason string) bool {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StoreTimeout)
		start := time.Now()
		left, done, err := b.store.RemoveNode(ctx, node, epoch, removeChunk)
		b.m.storeSeconds.WithLabelValues("remove_node").Observe(time.Since(start).Seconds())
		cancel()
		if err != nil {
			b.m.errors.WithLabelValues("store").Inc()
			return false
		}
		reasons := make([]string, len(left))
		for i := range reasons {
			reasons[i] = reason
		}
		b.publishChanges(nil, left, reasons)
		if done {
			return true
		}
	}
}

// publishChanges sends join and leave events to the rooms' members.
func (b *Brain) publishChanges(joined, left []Member, reasons []string) {
	if len(joined)+len(left) == 0 {
		return
	}
	pub := b.pubBufs.Get().(*eventBufs)
	for i := range joined {
		b.publishEvent(pub, &joined[i], false, "")
		b.m.joins.Inc()
	}
	for i := range left {
		r := reasons[i]
		b.publishEvent(pub, &left[i], true, r)
		b.m.leaves.WithLabelValues(r).Inc()
	}
	b.pubBufs.Put(pub)
}

// eventBufs are the buffers an event is encoded in (NATS copies what it
// publishes, so they are reused).
type eventBufs struct {
	subj, data []byte
}

func (b *Brain) publishEvent(pub *eventBufs, m *Member, leave bool, reason string) {
	pub.data = appendEvent(pub.data[:0], m, leave, reason)
	pub.subj = append(append(append(append(pub.subj[:0], b.cfg.Prefix...), ".$presence."...), m.Tenant...), '.')
	pub.subj = append(pub.subj, m.Subject...)
	if err := b.nc.Publish(unsafe.String(unsafe.SliceData(pub.subj), len(pub.subj)), pub.data); err != nil {
		b.m.errors.WithLabelValues("publish").Inc()
	}
}

// watch expires silent nodes, checks the store and, when the store is
// back or has lost what was applied, asks the live nodes for snapshots.
func (b *Brain) watch() {
	defer b.done.Done()
	tick := time.NewTicker(min(b.cfg.NodeTTL/6, 500*time.Millisecond))
	defer tick.Stop()
	lastCheck := time.Time{}
	for {
		select {
		case <-b.stop:
			return
		case now := <-tick.C:
			b.expire(now)
			if now.Sub(lastCheck) >= time.Second {
				lastCheck = now
				b.checkStore()
			}
		}
	}
}

// expire removes the members of nodes not heard from for NodeTTL.
func (b *Brain) expire(now time.Time) {
	type dead struct {
		node  string
		epoch uint64
	}
	var gone []dead
	b.mu.Lock()
	for id, ns := range b.nodes {
		if !ns.removing && now.Sub(ns.lastSeen) > b.cfg.NodeTTL {
			ns.removing = true
			gone = append(gone, dead{id, ns.epoch})
		}
	}
	b.mu.Unlock()
	for _, d := range gone {
		b.m.nodesDown.Inc()
		b.log.Info("brain: node silent; removing its members", "node", d.node, "ttl", b.cfg.NodeTTL)
		ok := b.removeNode(d.node, d.epoch, "node_down")
		b.mu.Lock()
		if ns := b.nodes[d.node]; ns != nil {
			if ok && now.Sub(ns.lastSeen) > b.cfg.NodeTTL {
				delete(b.nodes, d.node)
				b.m.nodeMembers.DeleteLabelValues(d.node)
			} else {
				ns.removing = false // retried at the next tick
			}
		}
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.m.nodes.Set(float64(len(b.nodes)))
	b.mu.Unlock()
}

// checkStore pings the store and compares its nodes with what was
// applied: a store that was down, or lost a node's members (a restarted
// Valkey without persistence), gets snapshots from the live nodes.
func (b *Brain) checkStore() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StoreTimeout)
	defer cancel()
	start := time.Now()
	nodes, err := b.store.Nodes(ctx)
	b.m.storeSeconds.WithLabelValues("nodes").Observe(time.Since(start).Seconds())
	if err != nil {
		if b.storeUp.Swap(false) {
			b.log.Warn("brain: presence store unavailable", "err", err)
		}
		b.m.storeUp.Set(0)
		return
	}
	if !b.storeUp.Swap(true) {
		b.log.Info("brain: presence store available")
	}
	b.m.storeUp.Set(1)
	stored := make(map[string]Node, len(nodes))
	for _, n := range nodes {
		stored[n.ID] = n
	}
	type ask struct {
		node  string
		epoch uint64
	}
	var asks []ask
	b.mu.Lock()
	for id, ns := range b.nodes {
		if ns.removing || ns.epoch == 0 {
			continue
		}
		n, ok := stored[id]
		if ns.applied == 0 && ns.members == 0 {
			continue // nothing to restore
		}
		if !ok || n.Epoch < ns.epoch || n.Seq < ns.applied || ns.applied == 0 {
			ns.applied = min(ns.applied, n.Seq)
			asks = append(asks, ask{id, ns.epoch})
		}
	}
	b.mu.Unlock()
	for _, a := range asks {
		b.askSync(a.node, a.epoch)
	}
}

// nodeLocked returns the state of node, creating it. Assumes b.mu held.
func (b *Brain) nodeLocked(node string) *nodeState {
	ns := b.nodes[node]
	if ns == nil {
		ns = &nodeState{lastSeen: time.Now()}
		b.nodes[node] = ns
	}
	return ns
}

// onQuery answers a presence query from the store, on a goroutine of its
// own (at most QueryConcurrency at once).
func (b *Brain) onQuery(m *nats.Msg) {
	select {
	case b.queries <- struct{}{}:
	case <-b.stop:
		return
	}
	go func() {
		defer func() { <-b.queries }()
		bp := answerBufs.Get().(*[]byte)
		data := b.answer((*bp)[:0], m.Data)
		if err := m.Respond(data); err != nil {
			b.m.errors.WithLabelValues("publish").Inc()
		}
		if cap(data) <= 1<<20 {
			*bp = data[:0]
			answerBufs.Put(bp)
		}
	}()
}

// answer runs one query and appends its encoded pb.PresenceAnswer to dst.
func (b *Brain) answer(dst, data []byte) []byte {
	var q pb.PresenceQuery
	if err := q.UnmarshalVT(data); err != nil || q.Tenant == "" || q.Subject == "" {
		b.m.queries.WithLabelValues("invalid").Inc()
		return appendAnswerError(dst, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "invalid presence query")
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.StoreTimeout)
	defer cancel()
	start := time.Now()
	members, users, err := b.store.Count(ctx, q.Tenant, q.Subject)
	b.m.storeSeconds.WithLabelValues("count").Observe(time.Since(start).Seconds())
	if err != nil {
		return b.unavailable(dst)
	}
	if q.CountOnly {
		b.m.queries.WithLabelValues("count").Inc()
		return appendAnswerTail(dst, members, users, "")
	}
	limit := int(q.Limit)
	if limit <= 0 || limit > DefaultPageLimit {
		limit = DefaultPageLimit
	}
	start = time.Now()
	var next string
	if mp, ok := b.store.(memberPager); ok {
		dst, next, err = mp.appendMembers(ctx, dst, q.Tenant, q.Subject, q.Cursor, limit)
	} else {
		var page []Member
		page, next, err = b.store.Members(ctx, q.Tenant, q.Subject, q.Cursor, limit)
		for i := range page {
			dst = appendAnswerMember(dst, &page[i])
		}
	}
	b.m.storeSeconds.WithLabelValues("members").Observe(time.Since(start).Seconds())
	if err != nil {
		return b.unavailable(dst[:0])
	}
	b.m.queries.WithLabelValues("members").Inc()
	return appendAnswerTail(dst, members, users, next)
}

// unavailable counts a query the store failed and appends its answer.
func (b *Brain) unavailable(dst []byte) []byte {
	b.m.queries.WithLabelValues("unavailable").Inc()
	b.m.errors.WithLabelValues("store").Inc()
	return appendAnswerError(dst, pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "presence store unavailable")
}

// toBatch converts a node's batch, or the run of its consecutive batches,
// for the store.
func toBatch(run []*pb.PresenceBatch) *Batch {
	first, last := run[0], run[len(run)-1]
	n := 0
	for _, pbb := range run {
		n += len(pbb.Ops)
	}
	b := &Batch{Node: last.Node, Epoch: last.Epoch, Seq: last.Seq, Sync: last.Sync, SyncEnd: last.SyncEnd,
		Ops: make([]Op, 0, n)}
	if len(run) > 1 {
		b.From = first.Seq
		b.Ends = make([]int, 0, len(run))
	}
	for _, pbb := range run {
		for _, op := range pbb.Ops {
			b.Ops = append(b.Ops, Op{Leave: op.Leave, Reason: op.Reason, Member: Member{
				Tenant: op.Tenant, Subject: op.Subject, Session: op.Session, User: op.User,
				Node: pbb.Node, Epoch: pbb.Epoch, JoinedAt: op.JoinedAt, Info: op.Info,
			}})
		}
		if b.Ends != nil {
			b.Ends = append(b.Ends, len(b.Ops))
		}
	}
	return b
}
