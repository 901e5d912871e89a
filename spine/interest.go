package spine

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/arqonbus/arqonbus/router"
)

// The interest protocol tells every node which patterns the other nodes
// listen to, so that Publish can skip a message no other node wants, with
// an external NATS as well as the embedded one (a NATS client cannot ask
// the server who listens).
//
// Each node keeps its own set of (tenant, pattern) entries under a version
// number that every change increments, and a random epoch per process. On
// "<prefix>.$spine.interest" it publishes:
//
//   - hb: a heartbeat every HeartbeatInterval with its epoch and version;
//   - add: entries it now listens to (with a reply subject: each node that
//     knows about it answers, and the first local subscriber of the pattern
//     is acknowledged only when every known node did, or AckTimeout passed);
//   - del: entries it no longer listens to (no answer needed: a node that
//     learns late only sends a message too many).
//
// A node that hears of another for the first time, or sees a gap in its
// versions, asks it for a snapshot ("<prefix>.$spine.snap.<node>", answered
// in chunks) and, until the snapshot is in, sends every message as if that
// node listened to everything. A node whose heartbeats stop for the TTL is
// forgotten. Adds are applied before they are acknowledged, so the rule
// "skip only what no known node wants" can only err towards sending.
//
// A node also sends everything while it is not connected to NATS and during
// its warm-up (1.5 heartbeat intervals after it starts or reconnects: every
// live node has sent a heartbeat by then). Its first heartbeat says hello,
// and every node that hears a hello answers with a heartbeat at once, so a
// new node knows the others (and waits for their answers to its adds)
// after one round trip rather than one interval: its first subscribers of
// a pattern wait until it has heard of one node (or, with no other node,
// for the warm-up). A node whose answer comes later than the first one
// still receives its adds (they are broadcast) and applies them as soon as
// they arrive.
type interest struct {
	s        *Spine
	node     string
	epoch    string
	subject  string // "<prefix>.$spine.interest"
	snapSubj string // "<prefix>.$spine.snap.<node>"
	ackPfx   string // reply subjects of this node's adds: ackPfx + version
	every    time.Duration
	ttl      time.Duration
	ackWait  time.Duration

	// remote holds the other nodes' entries: tenant, pattern -> node ids.
	remote *router.Router[string]

	// open: Publish may skip messages no known node listens to (warm,
	// connected, no node being synced). Written by the control goroutine.
	open atomic.Bool
	// warmAt is when the warm-up ends (Unix nanoseconds); 0 for a node
	// that is alone by construction.
	warmAt atomic.Int64
	alone  bool
	// heard is closed once this node has heard of another node, or its
	// first warm-up ended without one: until then a pattern's first
	// subscriber waits, since a node it has not heard of would not wait
	// for its answer.
	heard     chan struct{}
	heardOnce sync.Once

	mu      sync.Mutex // guards local, version, waiters, and the order of published deltas
	local   map[entryKey]struct{}
	version uint64
	waiters map[uint64]*ackWaiter

	// Deltas wait in queue for the announcer goroutine, which publishes
	// each run of consecutive adds (or removals) as one message: a storm
	// of subscribes costs a message per run, not per pattern.
	qmu    sync.Mutex
	queue  []delta
	addRun *addRun // the run the next add joins (nil: start one)
	kick   chan struct{}

	started bool           // the control goroutine runs (set by start, before close can run)
	ctl     chan *nats.Msg // interest messages and snapshot chunks, one goroutine
	resync  chan struct{}  // the connection came back: sync every node again
	subs    []*nats.Subscription
	stop    chan struct{}
	done    chan struct{}
	// announced is closed when the announcer goroutine has stopped.
	announced chan struct{}

	// Owned by the control goroutine.
	nodes map[string]*remoteNode
	// known lists the nodes' names for awaitAcks (copy-on-write).
	known atomic.Pointer[[]string]

	// Gauges and counters (read by metrics).
	nodeCount    atomic.Int64
	entryCount   atomic.Int64
	ackTimeouts  atomic.Uint64
	syncs        atomic.Uint64
	decodeErrors atomic.Uint64
}

// entryKey is one (tenant, pattern) entry.
type entryKey struct{ tenant, pattern string }

// remoteNode is what this node knows about another.
type remoteNode struct {
	epoch    string
	version  uint64
	entries  map[entryKey]struct{}
	lastSeen time.Time

	syncing   bool
	syncSeen  time.Time // when the sync started or its last chunk came
	syncSub   *nats.Subscription
	syncToken string                // the inbox of the snapshot being received
	snap      map[entryKey]struct{} // snapshot chunks received so far
	pending   []*interestMsg        // deltas that arrived while syncing
}

// delta is one queued change of this node's entries.
type delta struct {
	e   entryKey
	run *addRun // the add's run; nil for a removal
}

// addRun is a run of queued adds, published as one message.
type addRun struct {
	n    int           // adds in it (at most snapChunk)
	done chan struct{} // closed once every known node answered (or AckTimeout)
}

type ackWaiter struct {
	want map[string]bool // node -> answered
	left int
	done chan struct{}
}

// interestMsg is the wire form of the protocol (JSON: small and rare).
type interestMsg struct {
	Type    string      `json:"t"` // hb, add, del, snap
	Node    string      `json:"n"`
	Epoch   string      `json:"e"`
	Version uint64      `json:"v"`
	Entries [][2]string `json:"i,omitempty"` // tenant, pattern
	More    bool        `json:"m,omitempty"` // snap: more chunks follow
	Hello   bool        `json:"h,omitempty"` // hb: the node just started or reconnected; answer with a heartbeat
	Ack     string      `json:"a,omitempty"` // snap: where the requester confirms it applied it (+ version)
}

// Message types.
const (
	msgHeartbeat = "hb"
	msgAdd       = "add"
	msgDel       = "del"
	msgSnap      = "snap"
)

// snapChunk is the number of entries per snapshot message (about 40 bytes
// each: far below NATS's 1 MiB default payload).
const snapChunk = 4096

var errBadInterestMsg = errors.New("spine: bad interest message")

// decodeInterestMsg parses and checks one protocol message.
func decodeInterestMsg(data []byte) (*interestMsg, error) {
	var m interestMsg
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadInterestMsg, err)
	}
	switch m.Type {
	case msgHeartbeat, msgAdd, msgDel, msgSnap:
	default:
		return nil, fmt.Errorf("%w: type %q", errBadInterestMsg, m.Type)
	}
	if m.Node == "" || m.Epoch == "" {
		return nil, fmt.Errorf("%w: no node or epoch", errBadInterestMsg)
	}
	for _, e := range m.Entries {
		if e[0] == "" || strings.ContainsAny(e[0], ".*> \t\r\n") {
			return nil, fmt.Errorf("%w: tenant %q", errBadInterestMsg, e[0])
		}
		if err := router.ValidatePattern(e[1]); err != nil {
			return nil, fmt.Errorf("%w: pattern %q: %v", errBadInterestMsg, e[1], err)
		}
	}
	return &m, nil
}

func newInterest(s *Spine, alone bool) *interest {
	every := s.cfg.HeartbeatInterval
	ttl := s.cfg.InterestTTL
	if ttl <= 0 {
		ttl = 15 * every
	}
	in := &interest{
		s:         s,
		node:      s.cfg.NodeID,
		epoch:     nuid.Next(),
		subject:   s.cfg.Prefix + ".$spine.interest",
		snapSubj:  s.cfg.Prefix + ".$spine.snap." + s.cfg.NodeID,
		ackPfx:    nats.NewInbox() + ".",
		every:     every,
		ttl:       ttl,
		ackWait:   s.cfg.AckTimeout,
		remote:    router.New[string](router.Config{CacheSize: 4096}),
		alone:     alone,
		heard:     make(chan struct{}),
		local:     make(map[entryKey]struct{}),
		waiters:   make(map[uint64]*ackWaiter),
		ctl:       make(chan *nats.Msg, 65536),
		kick:      make(chan struct{}, 1),
		resync:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		announced: make(chan struct{}),
		nodes:     make(map[string]*remoteNode),
	}
	if alone {
		// An embedded server nobody else can reach: no other node can
		// ever exist.
		in.open.Store(true)
		close(in.heard)
	}
	return in
}

// start subscribes and starts the control goroutine.
func (in *interest) start() error {
	nc := in.s.nc
	sub, err := nc.ChanSubscribe(in.subject, in.ctl)
	if err != nil {
		return err
	}
	in.subs = append(in.subs, sub)
	snap, err := nc.Subscribe(in.snapSubj, in.onSnapshotRequest)
	if err != nil {
		return err
	}
	in.subs = append(in.subs, snap)
	acks, err := nc.Subscribe(in.ackPfx+"*", in.onAck)
	if err != nil {
		return err
	}
	in.subs = append(in.subs, acks)
	in.beginWarmup()
	in.started = true
	go in.run()
	go in.announce()
	return nil
}

// beginWarmup makes Publish send everything for 1.5 heartbeat intervals.
func (in *interest) beginWarmup() {
	if in.alone {
		return
	}
	in.warmAt.Store(time.Now().Add(in.every * 3 / 2).UnixNano())
	in.open.Store(false)
}

// close stops the control goroutine.
func (in *interest) close() {
	select {
	case <-in.stop:
		return
	default:
	}
	close(in.stop)
	if in.started {
		<-in.done
		<-in.announced
	}
	for _, s := range in.subs {
		_ = s.Unsubscribe()
	}
}

// mayReach reports whether a message on tenant's subject may be wanted by
// another node.
func (in *interest) mayReach(tenant, subject string) bool {
	return !in.open.Load() || len(in.remote.Match(tenant, subject)) > 0
}

// run is the control goroutine: protocol messages, heartbeats, expiry.
func (in *interest) run() {
	defer close(in.done)
	tick := time.NewTicker(in.every)
	defer tick.Stop()
	in.heartbeat(true)
	for {
		select {
		case <-in.stop:
			return
		case m := <-in.ctl:
			in.onMsg(m)
		case <-in.resync:
			in.heartbeat(true)
			for name, n := range in.nodes {
				in.startSync(name, n)
			}
		case <-tick.C:
			in.heartbeat(false)
			in.expire(time.Now())
		}
		in.updateOpen()
	}
}

// updateOpen recomputes whether Publish may skip. Control goroutine.
func (in *interest) updateOpen() {
	if in.alone {
		return // always open
	}
	ok := in.s.nc.IsConnected() && time.Now().UnixNano() >= in.warmAt.Load()
	if ok || len(in.nodes) > 0 {
		in.heardOnce.Do(func() { close(in.heard) })
	}
	for _, n := range in.nodes {
		if n.syncing {
			ok = false
			break
		}
	}
	in.open.Store(ok)
}

// heartbeat publishes this node's epoch and version; with hello it asks
// every node for a heartbeat at once.
func (in *interest) heartbeat(hello bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.publishLocked(&interestMsg{Type: msgHeartbeat, Version: in.version, Hello: hello}, "")
}

// publishLocked fills in node and epoch and publishes m. Assumes in.mu held
// (deltas leave in version order).
func (in *interest) publishLocked(m *interestMsg, reply string) {
	if in.alone {
		return // nobody can hear it
	}
	m.Node, m.Epoch = in.node, in.epoch
	data, err := json.Marshal(m)
	if err != nil {
		return
	}
	if reply == "" {
		err = in.s.nc.Publish(in.subject, data)
	} else {
		err = in.s.nc.PublishRequest(in.subject, reply, data)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		in.s.log.Warn("spine: interest message not sent", "err", err)
	}
}

// add queues this node's interest in (tenant, pattern) for announcement.
// The returned function waits until every known node acknowledged it (or
// AckTimeout): call it without holding locks. Callers order add and
// remove of one entry (the spine's shard lock).
func (in *interest) add(tenant, pattern string) func() {
	in.qmu.Lock()
	r := in.addRun
	if r == nil || r.n >= snapChunk {
		r = &addRun{done: make(chan struct{})}
		in.addRun = r
	}
	r.n++
	in.queue = append(in.queue, delta{e: entryKey{tenant, pattern}, run: r})
	in.qmu.Unlock()
	in.wake()
	return func() {
		select {
		case <-r.done:
		case <-in.stop:
		}
	}
}

// remove queues the end of this node's interest in (tenant, pattern).
func (in *interest) remove(tenant, pattern string) {
	in.qmu.Lock()
	in.addRun = nil // a later add goes after this removal
	in.queue = append(in.queue, delta{e: entryKey{tenant, pattern}})
	in.qmu.Unlock()
	in.wake()
}

func (in *interest) wake() {
	select {
	case in.kick <- struct{}{}:
	default:
	}
}

// announce is the announcer goroutine: it publishes the queued deltas,
// one message per run of adds or of removals (up to snapChunk entries),
// and starts the wait for each add run's acknowledgements.
func (in *interest) announce() {
	defer close(in.announced)
	var q []delta
	for {
		select {
		case <-in.stop:
			return // waiting adds see stop
		case <-in.kick:
		}
		in.qmu.Lock()
		q, in.queue = in.queue, q[:0]
		in.addRun = nil
		in.qmu.Unlock()
		for len(q) > 0 {
			n := 1
			for n < len(q) && n < snapChunk && q[n].run == q[0].run {
				n++ // adds of one run, or consecutive removals
			}
			in.publishDelta(q[:n])
			q = q[n:]
		}
		q = q[:0]
	}
}

// publishDelta applies one run of deltas (all adds of one run, or all
// removals) to this node's entries and publishes it under a new version.
func (in *interest) publishDelta(run []delta) {
	entries := make([][2]string, len(run))
	for i, d := range run {
		entries[i] = [2]string{d.e.tenant, d.e.pattern}
	}
	in.mu.Lock()
	in.version++
	v := in.version
	r := run[0].run
	if r == nil {
		for _, d := range run {
			delete(in.local, d.e)
		}
		in.publishLocked(&interestMsg{Type: msgDel, Version: v, Entries: entries}, "")
		in.mu.Unlock()
		return
	}
	for _, d := range run {
		in.local[d.e] = struct{}{}
	}
	w := &ackWaiter{want: make(map[string]bool), done: make(chan struct{})}
	in.waiters[v] = w
	in.publishLocked(&interestMsg{Type: msgAdd, Version: v, Entries: entries}, in.ackPfx+strconv.FormatUint(v, 10))
	in.mu.Unlock()
	go func() {
		in.awaitAcks(v, w)
		close(r.done)
	}()
}

// awaitAcks waits for the acknowledgements of v from every node known.
func (in *interest) awaitAcks(v uint64, w *ackWaiter) {
	defer func() {
		in.mu.Lock()
		delete(in.waiters, v)
		in.mu.Unlock()
	}()
	// A node that has not heard of any other yet (it just started: its
	// hello is answered within a round trip) waits for that, or for its
	// warm-up to end when there is no other node.
	select {
	case <-in.heard:
	default:
		warm := time.NewTimer(2 * in.every)
		select {
		case <-in.heard:
		case <-warm.C:
		case <-in.stop:
		}
		warm.Stop()
	}
	timeout := time.NewTimer(in.ackWait)
	defer timeout.Stop()
	// Which nodes must answer: asked of the control goroutine's table
	// through a snapshot of names kept under in.mu.
	in.mu.Lock()
	for _, name := range in.knownNodes() {
		if _, ok := w.want[name]; !ok {
			w.want[name] = false
			w.left++
		}
	}
	left := w.left
	in.mu.Unlock()
	if left == 0 {
		// Nobody to wait for; make sure NATS holds the subscription.
		_ = in.s.nc.FlushTimeout(in.ackWait)
		return
	}
	select {
	case <-w.done:
	case <-timeout.C:
		in.ackTimeouts.Add(1)
	case <-in.stop:
	}
}

// knownNodes lists the nodes this node knows (a copy the control
// goroutine keeps).
func (in *interest) knownNodes() []string {
	p := in.known.Load()
	if p == nil {
		return nil
	}
	return *p
}

// onAck records one node's acknowledgement of an add, or of a snapshot
// (which covers every add up to its version).
func (in *interest) onAck(m *nats.Msg) {
	v, err := strconv.ParseUint(m.Subject[len(in.ackPfx):], 10, 64)
	if err != nil {
		return
	}
	node := string(m.Data)
	in.mu.Lock()
	defer in.mu.Unlock()
	if w := in.waiters[v]; w != nil {
		w.answered(node)
	}
	if m.Header.Get("Arq-Snapshot") != "" {
		for wv, w := range in.waiters {
			if wv < v {
				w.answered(node)
			}
		}
	}
}

// answered records node's answer. Assumes the interest's mu held.
func (w *ackWaiter) answered(node string) {
	answered, wanted := w.want[node]
	if wanted && answered {
		return
	}
	w.want[node] = true
	if wanted {
		w.left--
		if w.left == 0 {
			close(w.done)
		}
	}
}

// onSnapshotRequest answers another node's request for this node's entries,
// in chunks on its reply subject. Runs on its subscription's goroutine.
func (in *interest) onSnapshotRequest(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	// A copy of one version; the chunks go out without the lock (a delta
	// sent meanwhile is newer, and the requester applies it after them).
	in.mu.Lock()
	entries := make([]entryKey, 0, len(in.local))
	for e := range in.local {
		entries = append(entries, e)
	}
	version := in.version
	in.mu.Unlock()
	chunk := make([][2]string, 0, min(len(entries), snapChunk))
	send := func(more bool) {
		data, err := json.Marshal(&interestMsg{Type: msgSnap, Node: in.node, Epoch: in.epoch, Version: version, Entries: chunk, More: more, Ack: in.ackPfx})
		if err == nil {
			_ = in.s.nc.Publish(m.Reply, data)
		}
		chunk = chunk[:0]
	}
	for _, e := range entries {
		chunk = append(chunk, [2]string{e.tenant, e.pattern})
		if len(chunk) == snapChunk {
			send(true)
		}
	}
	send(false)
}

// onMsg handles one protocol message. Control goroutine.
func (in *interest) onMsg(nm *nats.Msg) {
	m, err := decodeInterestMsg(nm.Data)
	if err != nil {
		in.decodeErrors.Add(1)
		return
	}
	if m.Node == in.node && m.Epoch == in.epoch {
		return // our own (NoEcho makes this rare: only snapshot inboxes)
	}
	now := time.Now()
	n := in.nodes[m.Node]
	if m.Type == msgSnap {
		if n != nil && n.syncing && nm.Subject == n.syncToken {
			in.onSnapshotChunk(n, m)
		}
		return
	}
	if n == nil {
		n = &remoteNode{epoch: m.Epoch, entries: make(map[entryKey]struct{})}
		in.nodes[m.Node] = n
		in.setKnown()
		in.startSync(m.Node, n)
	} else if n.epoch != m.Epoch {
		// The node restarted: what it had before goes when the snapshot
		// of its new life is in.
		n.epoch, n.version = m.Epoch, 0
		in.startSync(m.Node, n)
	}
	n.lastSeen = now
	switch m.Type {
	case msgHeartbeat:
		if m.Hello {
			in.heartbeat(false)
		}
		if !n.syncing && m.Version > n.version {
			in.startSync(m.Node, n) // missed a delta
		}
	case msgAdd, msgDel:
		if m.Type == msgAdd {
			// Adds count at once, before the answer, even while syncing.
			for _, e := range m.Entries {
				in.insert(m.Node, n, entryKey{e[0], e[1]})
			}
		}
		switch {
		case n.syncing:
			n.pending = append(n.pending, m)
		case m.Version == n.version+1:
			in.apply(m.Node, n, m)
			n.version = m.Version
		case m.Version <= n.version:
			// Already known.
		default:
			n.pending = append(n.pending, m)
			in.startSync(m.Node, n)
		}
		if nm.Reply != "" {
			_ = in.s.nc.Publish(nm.Reply, []byte(in.node))
		}
	}
}

// apply applies one delta to n's entries. Control goroutine.
func (in *interest) apply(name string, n *remoteNode, m *interestMsg) {
	for _, e := range m.Entries {
		k := entryKey{e[0], e[1]}
		if m.Type == msgAdd {
			in.insert(name, n, k)
		} else {
			in.delete(name, n, k)
		}
	}
}

func (in *interest) insert(name string, n *remoteNode, k entryKey) {
	if _, ok := n.entries[k]; ok {
		return
	}
	if err := in.remote.Insert(k.tenant, k.pattern, name); err != nil {
		in.decodeErrors.Add(1)
		return
	}
	n.entries[k] = struct{}{}
	in.entryCount.Add(1)
}

func (in *interest) delete(name string, n *remoteNode, k entryKey) {
	if _, ok := n.entries[k]; !ok {
		return
	}
	_ = in.remote.Remove(k.tenant, k.pattern, name)
	delete(n.entries, k)
	in.entryCount.Add(-1)
}

// startSync asks node name for a snapshot. Control goroutine.
func (in *interest) startSync(name string, n *remoteNode) {
	if n.syncSub != nil {
		_ = n.syncSub.Unsubscribe()
	}
	n.syncing = true
	n.syncSeen = time.Now()
	n.snap = make(map[entryKey]struct{})
	n.syncToken = nats.NewInbox()
	in.syncs.Add(1)
	sub, err := in.s.nc.ChanSubscribe(n.syncToken, in.ctl)
	if err != nil {
		n.syncSub = nil
		return // retried by expire
	}
	n.syncSub = sub
	_ = in.s.nc.PublishRequest(in.s.cfg.Prefix+".$spine.snap."+name, n.syncToken, nil)
}

// onSnapshotChunk collects a snapshot and, at its last chunk, makes it
// n's entries, with the deltas that arrived meanwhile applied on top.
func (in *interest) onSnapshotChunk(n *remoteNode, m *interestMsg) {
	if m.Epoch != n.epoch {
		return
	}
	n.syncSeen = time.Now()
	for _, e := range m.Entries {
		n.snap[entryKey{e[0], e[1]}] = struct{}{}
	}
	if m.More {
		return
	}
	name := m.Node
	final, v := n.snap, m.Version
	for _, d := range n.pending {
		switch {
		case d.Epoch != n.epoch || d.Version <= v:
		case d.Version == v+1:
			for _, e := range d.Entries {
				if d.Type == msgAdd {
					final[entryKey{e[0], e[1]}] = struct{}{}
				} else {
					delete(final, entryKey{e[0], e[1]})
				}
			}
			v = d.Version
		default:
			// A gap after the snapshot: ask again (what is there stays).
			in.startSync(name, n)
			return
		}
	}
	for k := range final { // adds first: never a moment with less interest
		in.insert(name, n, k)
	}
	for k := range n.entries {
		if _, ok := final[k]; !ok {
			in.delete(name, n, k)
		}
	}
	n.version = v
	n.syncing, n.snap, n.pending = false, nil, nil
	if n.syncSub != nil {
		_ = n.syncSub.Unsubscribe()
		n.syncSub = nil
	}
	// Tell the node: every add up to v is known here (it may be waiting
	// for this node's answer to one it sent while this node was away).
	if strings.HasPrefix(m.Ack, "_INBOX.") {
		ack := nats.NewMsg(m.Ack + strconv.FormatUint(v, 10))
		ack.Header.Set("Arq-Snapshot", "1")
		ack.Data = []byte(in.node)
		_ = in.s.nc.PublishMsg(ack)
	}
}

// expire forgets nodes whose heartbeats stopped and retries stuck syncs.
// Control goroutine.
func (in *interest) expire(now time.Time) {
	for name, n := range in.nodes {
		if now.Sub(n.lastSeen) > in.ttl {
			for k := range n.entries {
				in.delete(name, n, k)
			}
			if n.syncSub != nil {
				_ = n.syncSub.Unsubscribe()
			}
			delete(in.nodes, name)
			in.setKnown()
			continue
		}
		if n.syncing && now.Sub(n.syncSeen) > 2*in.every { // no answer: ask again
			in.startSync(name, n)
		}
	}
}

// setKnown publishes the list of known nodes for awaitAcks. Control
// goroutine.
func (in *interest) setKnown() {
	names := make([]string, 0, len(in.nodes))
	for name := range in.nodes {
		names = append(names, name)
	}
	in.known.Store(&names)
	in.nodeCount.Store(int64(len(names)))
}

// reconnected is called when the NATS connection comes back: deltas may
// have been missed, so everything is sent until a warm-up passed, and
// every known node is synced again at once (which also answers the adds
// they sent meanwhile).
func (in *interest) reconnected() {
	in.beginWarmup()
	select {
	case in.resync <- struct{}{}:
	default:
	}
}
