package gateway

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/pool"
	"github.com/arqonbus/arqonbus/router"
)

// Presence, the gateway's half. The brain keeps who is in which room; the
// gateway tells it, over the spine, and delivers what it answers:
//
//	presence sub  -> joined -> op queued -> flusher sends PresenceBatch (seq n)
//	                                        on <prefix>.$brain.node.<node>
//	unsub / close -> left   -> op queued -> same stream, in order
//	every HeartbeatInterval -> heartbeat batch (seq = last sent, members)
//	brain asks <prefix>.$brain.sync.<node> -> flusher sends a snapshot
//	brain publishes <prefix>.$presence.<tenant>.<room> -> delivered to this
//	                                        node's members of the room
//	presence query -> request <prefix>.$brain.query (queue group) -> answer
//
// The node's stream is ordered (one flusher goroutine publishes it on one
// NATS connection) and numbered: a brain that misses a batch sees the gap
// and asks for a snapshot, so a lost message, a brain restart or a Valkey
// restart heals without a gateway restart. The epoch (this process's start)
// lets brains remove the members of a previous life of the node.

// PresenceConfig configures the gateway's presence. Zero fields mean the
// defaults shown. Presence needs a Spine.
type PresenceConfig struct {
	// Disabled turns presence off: presence subs and queries answer
	// UNAVAILABLE.
	Disabled bool
	// HeartbeatInterval is how often the node tells brains it is alive;
	// default 2s. Brains remove a node's members when its heartbeats stop
	// for their TTL (default 6s).
	HeartbeatInterval time.Duration
	// QueryTimeout bounds a presence query's wait for a brain; default 2s.
	QueryTimeout time.Duration
}

// Presence limits.
const (
	// maxBatchOps bounds the changes of one PresenceBatch.
	maxBatchOps = 512
	// maxPresencePage bounds the members of one presence answer.
	maxPresencePage = 1000
	// maxQueriesPerConn bounds a connection's presence queries in flight.
	maxQueriesPerConn = 4
	// presenceEventBuffer is how many events may wait for delivery
	// before NATS drops them as a slow consumer (counted).
	presenceEventBuffer = 16 << 10
)

// presence is the gateway's presence component; it observes joins and
// leaves (memberObserver).
type presence struct {
	g         *Gateway
	cfg       PresenceConfig
	nc        *nats.Conn
	prefix    string
	node      string
	epoch     uint64
	nodeSubj  string
	querySubj string
	m         presenceMetrics

	mu      sync.Mutex
	rooms   map[roomKey]*room
	tenants map[string]*tenantEvents
	byConn  map[*conn][]string // the rooms of each member connection
	members int
	pending []*pb.PresenceOp // changes not yet sent, in order
	seq     uint64           // the last batch sent
	sync    bool             // a brain asked for a snapshot

	wake    chan struct{}
	events  chan *nats.Msg
	syncSub *nats.Subscription
	stop    chan struct{}
	done    sync.WaitGroup
}

type roomKey struct{ tenant, subject string }

// A room is this node's members of one room.
type room struct {
	members map[*conn]*localMember
}

// tenantEvents is this node's subscription to a tenant's presence events
// ("<prefix>.$presence.<tenant>.>"), held while the node has members in any
// of the tenant's rooms: one subscription per tenant, not per room, since a
// subscription per room cost more than the events it filtered (a NATS
// SUB/UNSUB per first and last member).
type tenantEvents struct {
	rooms int
	sub   *nats.Subscription
}

type localMember struct {
	joinedAt int64 // Unix ms
	info     []byte
}

type presenceMetrics struct {
	members   prometheus.Gauge
	joins     prometheus.Counter
	leaves    *prometheus.CounterVec
	queries   *prometheus.CounterVec
	batches   prometheus.Counter
	snapshots prometheus.Counter
	events    prometheus.Counter
	errors    *prometheus.CounterVec
}

func newPresenceMetrics() presenceMetrics {
	return presenceMetrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arq_presence_local_members", Help: "Presence members (connection x room) on this node."}),
		joins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_presence_local_joins_total", Help: "Presence joins on this node."}),
		leaves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_presence_local_leaves_total", Help: "Presence leaves on this node, by reason."}, []string{"reason"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_presence_queries_total", Help: "Presence queries from this node's clients, by result."}, []string{"result"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_presence_batches_sent_total", Help: "Presence batches (changes and heartbeats) sent to brains."}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_presence_snapshots_sent_total", Help: "Member snapshots sent because a brain asked."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arq_presence_events_delivered_total", Help: "Presence events queued for this node's members."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arq_presence_errors_total", Help: "Presence errors on this node, by kind."}, []string{"kind"}),
	}
}

func (m *presenceMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.members, m.joins, m.leaves, m.queries, m.batches, m.snapshots, m.events, m.errors}
}

// newPresence starts the presence component on the spine's connection.
func newPresence(g *Gateway, cfg PresenceConfig) (*presence, error) {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 2 * time.Second
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 2 * time.Second
	}
	p := &presence{
		g:       g,
		cfg:     cfg,
		nc:      g.spine.Conn(),
		prefix:  g.spine.Prefix(),
		node:    g.cfg.NodeID,
		epoch:   uint64(time.Now().UnixNano()),
		m:       newPresenceMetrics(),
		rooms:   make(map[roomKey]*room),
		tenants: make(map[string]*tenantEvents),
		byConn:  make(map[*conn][]string),
		wake:    make(chan struct{}, 1),
		events:  make(chan *nats.Msg, presenceEventBuffer),
		stop:    make(chan struct{}),
	}
	p.nodeSubj = p.prefix + ".$brain.node." + p.node
	p.querySubj = p.prefix + ".$brain.query"
	sub, err := p.nc.Subscribe(p.prefix+".$brain.sync."+p.node, p.onSyncRequest)
	if err != nil {
		return nil, err
	}
	p.syncSub = sub
	p.done.Add(2)
	go p.flusher()
	go p.deliverEvents()
	return p, nil
}

// joined makes c a member of room (memberObserver). info is copied.
func (p *presence) joined(c *conn, subject string, info []byte) {
	lm := &localMember{joinedAt: time.Now().UnixMilli()}
	if len(info) > 0 {
		lm.info = append([]byte(nil), info...)
	}
	k := roomKey{c.ident.Tenant, subject}
	p.mu.Lock()
	r := p.rooms[k]
	if r == nil {
		r = &room{members: make(map[*conn]*localMember)}
		p.rooms[k] = r
		te := p.tenants[k.tenant]
		if te == nil {
			te = &tenantEvents{}
			// The SUB is on the connection before the join below is
			// published, so the server holds it when the brain's
			// event for this join comes back.
			sub, err := p.nc.ChanSubscribe(p.prefix+".$presence."+k.tenant+".>", p.events)
			if err != nil {
				p.m.errors.WithLabelValues("subscribe").Inc()
			}
			te.sub = sub
			p.tenants[k.tenant] = te
		}
		te.rooms++
	}
	r.members[c] = lm
	p.byConn[c] = append(p.byConn[c], subject)
	p.members++
	p.pending = append(p.pending, &pb.PresenceOp{
		Tenant: k.tenant, Subject: subject, Session: c.id, User: c.ident.User,
		JoinedAt: lm.joinedAt, Info: lm.info,
	})
	p.mu.Unlock()
	p.m.joins.Inc()
	p.m.members.Inc()
	p.kick()
}

// left ends c's membership of room (memberObserver).
func (p *presence) left(c *conn, subject string, reason leaveReason) bool {
	p.mu.Lock()
	ok := p.leaveLocked(c, subject, reason)
	if ok {
		rs := p.byConn[c]
		for i, r := range rs {
			if r == subject {
				rs[i] = rs[len(rs)-1]
				rs = rs[:len(rs)-1]
				break
			}
		}
		if len(rs) == 0 {
			delete(p.byConn, c)
		} else {
			p.byConn[c] = rs
		}
	}
	p.mu.Unlock()
	if ok {
		p.kick()
	}
	return ok
}

// leftAll ends every membership of c (memberObserver).
func (p *presence) leftAll(c *conn, reason leaveReason) {
	p.mu.Lock()
	for _, subject := range p.byConn[c] {
		p.leaveLocked(c, subject, reason)
	}
	delete(p.byConn, c)
	p.mu.Unlock()
	p.kick()
}

// isMember reports whether c is a member of subject (memberObserver).
func (p *presence) isMember(c *conn, subject string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.byConn[c] {
		if r == subject {
			return true
		}
	}
	return false
}

// leaveLocked removes c from room subject and queues the leave. Assumes
// p.mu held.
func (p *presence) leaveLocked(c *conn, subject string, reason leaveReason) bool {
	k := roomKey{c.ident.Tenant, subject}
	r := p.rooms[k]
	if r == nil || r.members[c] == nil {
		return false
	}
	delete(r.members, c)
	p.members--
	if len(r.members) == 0 {
		delete(p.rooms, k)
		if te := p.tenants[k.tenant]; te != nil {
			if te.rooms--; te.rooms == 0 {
				if te.sub != nil {
					_ = te.sub.Unsubscribe()
				}
				delete(p.tenants, k.tenant)
			}
		}
	}
	p.pending = append(p.pending, &pb.PresenceOp{
		Leave: true, Tenant: k.tenant, Subject: subject, Session: c.id, Reason: reason.String(),
	})
	p.m.leaves.WithLabelValues(reason.String()).Inc()
	p.m.members.Dec()
	return true
}

// isEventSubject reports whether subj is "<prefix>.$presence.<tenant>.<room>"
// for ev's tenant and room: an event is delivered only in the room its NATS
// subject names, whatever it claims.
func (p *presence) isEventSubject(subj string, ev *pb.PresenceEvent) bool {
	const mid = ".$presence."
	want := len(p.prefix) + len(mid) + len(ev.Tenant) + 1 + len(ev.Subject)
	if len(subj) != want || !strings.HasPrefix(subj, p.prefix) {
		return false
	}
	rest := subj[len(p.prefix):]
	if !strings.HasPrefix(rest, mid) {
		return false
	}
	rest = rest[len(mid):]
	return strings.HasPrefix(rest, ev.Tenant) && rest[len(ev.Tenant)] == '.' && rest[len(ev.Tenant)+1:] == ev.Subject
}

func (p *presence) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// flusher publishes the node's stream: changes as they come (what queues
// while a batch is published leaves in the next one), snapshots when asked,
// heartbeats on schedule. It is the stream's only publisher, so batches
// leave in seq order.
func (p *presence) flusher() {
	defer p.done.Done()
	tick := time.NewTicker(p.cfg.HeartbeatInterval)
	defer tick.Stop()
	p.send(true) // a first heartbeat: brains learn the node and its epoch
	var last time.Time
	for {
		select {
		case <-p.wake:
			// Under a storm of joins (a batch went out a moment ago),
			// wait a little so the next batch carries many changes:
			// the brains apply batches one at a time per node. An
			// idle node sends at once.
			if time.Since(last) < 5*time.Millisecond {
				time.Sleep(2 * time.Millisecond)
			}
			last = time.Now()
			p.send(false)
		case <-tick.C:
			p.send(true)
		case <-p.stop:
			p.send(true)
			_ = p.nc.FlushTimeout(2 * time.Second)
			return
		}
	}
}

// send publishes the pending changes, a snapshot if one was asked for, and
// with heartbeat a heartbeat.
func (p *presence) send(heartbeat bool) {
	p.mu.Lock()
	ops := p.pending
	p.pending = nil
	var batches []*pb.PresenceBatch
	for len(ops) > 0 {
		n := min(len(ops), maxBatchOps)
		p.seq++
		batches = append(batches, &pb.PresenceBatch{Node: p.node, Epoch: p.epoch, Seq: p.seq, Ops: ops[:n]})
		ops = ops[n:]
	}
	if p.sync {
		p.sync = false
		if p.seq == 0 {
			p.seq = 1 // a snapshot is numbered like a batch; 0 means none
		}
		batches = append(batches, p.snapshotLocked()...)
		p.m.snapshots.Inc()
	}
	if heartbeat {
		batches = append(batches, &pb.PresenceBatch{Node: p.node, Epoch: p.epoch, Seq: p.seq,
			Heartbeat: true, Members: uint32(p.members), SentAt: time.Now().UnixNano()})
	}
	p.mu.Unlock()
	for _, b := range batches {
		data, err := b.MarshalVT()
		if err == nil {
			err = p.nc.Publish(p.nodeSubj, data)
		}
		if err != nil {
			// A lost batch is a gap the brain repairs with a snapshot.
			p.m.errors.WithLabelValues("publish").Inc()
			continue
		}
		p.m.batches.Inc()
	}
}

// snapshotLocked returns every member of the node as a snapshot taken at
// the current seq: batches of joins marked sync, the last sync_end (an
// empty node sends one empty sync_end batch). Assumes p.mu held.
func (p *presence) snapshotLocked() []*pb.PresenceBatch {
	var out []*pb.PresenceBatch
	cur := &pb.PresenceBatch{Node: p.node, Epoch: p.epoch, Seq: p.seq, Sync: p.seq}
	for k, r := range p.rooms {
		for c, lm := range r.members {
			if len(cur.Ops) == maxBatchOps {
				out = append(out, cur)
				cur = &pb.PresenceBatch{Node: p.node, Epoch: p.epoch, Seq: p.seq, Sync: p.seq}
			}
			cur.Ops = append(cur.Ops, &pb.PresenceOp{
				Tenant: k.tenant, Subject: k.subject, Session: c.id, User: c.ident.User,
				JoinedAt: lm.joinedAt, Info: lm.info,
			})
		}
	}
	cur.SyncEnd = true
	return append(out, cur)
}

// onSyncRequest: a brain asks for a snapshot of this node's members.
func (p *presence) onSyncRequest(m *nats.Msg) {
	var req pb.SyncRequest
	if err := req.UnmarshalVT(m.Data); err != nil || req.Node != p.node {
		p.m.errors.WithLabelValues("decode").Inc()
		return
	}
	if req.Epoch != 0 && req.Epoch != p.epoch {
		return // for a previous life of this node
	}
	p.mu.Lock()
	p.sync = true
	p.mu.Unlock()
	p.kick()
}

// deliverEvents hands the brain's join and leave events to this node's
// members of their rooms, encoded once per codec. Events that queued
// together leave together: one flush list for up to eventBurst of them, so
// a member gets them in one write.
func (p *presence) deliverEvents() {
	defer p.done.Done()
	var targets []*conn
	for {
		var m *nats.Msg
		select {
		case m = <-p.events:
		case <-p.stop:
			return
		}
		fl := getFlushList()
		targets = p.deliverEvent(m, targets[:0], fl)
	more:
		for range eventBurst - 1 {
			select {
			case m = <-p.events:
				targets = p.deliverEvent(m, targets[:0], fl)
			default:
				break more
			}
		}
		fl.run()
		clear(targets)
	}
}

// eventBurst bounds the events delivered before their writes.
const eventBurst = 256

func (p *presence) deliverEvent(m *nats.Msg, targets []*conn, fl *flushList) []*conn {
	defer func() {
		if r := recover(); r != nil {
			p.g.metrics.panics.Inc()
			p.g.log.Error("gateway: panic delivering a presence event", "panic", r)
		}
	}()
	// The event's strings alias m.Data: it is encoded into frames below
	// and nothing keeps it.
	var ev pb.PresenceEvent
	if err := ev.UnmarshalVTUnsafe(m.Data); err != nil || ev.Member == nil || !p.isEventSubject(m.Subject, &ev) {
		p.m.errors.WithLabelValues("decode").Inc()
		return targets
	}
	p.mu.Lock()
	if r := p.rooms[roomKey{ev.Tenant, ev.Subject}]; r != nil {
		for c := range r.members {
			targets = append(targets, c)
		}
	}
	p.mu.Unlock()
	if len(targets) == 0 {
		return targets
	}
	f := pb.ServerFrame{Op: pb.Op_OP_PRESENCE_UPDATE, Subject: ev.Subject, Member: ev.Member}
	if ev.Leave {
		f.Op, f.Reason = pb.Op_OP_PRESENCE_LEAVE, ev.Reason
	}
	var jb, pbb *pool.Buf
	for _, c := range targets {
		var b *pool.Buf
		if c.codec == codecJSON {
			if jb == nil {
				jb = encodeServerFrame(true, &f)
			}
			b = jb
		} else {
			if pbb == nil {
				pbb = encodeServerFrame(false, &f)
			}
			b = pbb
		}
		if c.enqueue(b, fl) {
			p.m.events.Inc()
		}
	}
	if jb != nil {
		jb.Release()
	}
	if pbb != nil {
		pbb.Release()
	}
	return targets
}

// close sends what is pending (the leaves of a drained node) and a last
// heartbeat, and stops.
func (p *presence) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.done.Wait()
	if p.syncSub != nil {
		_ = p.syncSub.Unsubscribe()
	}
}

// presenceQuery answers {"op":"presence"}: the brain is asked on a
// goroutine of its own (the reader never waits for it), and its answer, or
// UNAVAILABLE after QueryTimeout, is queued to the connection.
func (c *conn) presenceQuery(text bool, f *pb.ClientFrame) {
	g := c.g
	p := g.presence
	fail := func(code pb.ErrorCode, msg string) {
		if p != nil {
			p.m.queries.WithLabelValues(strings.ToLower(pb.CodeName(code))).Inc()
		}
		c.replyError(text, f.Id, code, msg)
	}
	if err := router.ValidateSubject(f.Subject); err != nil {
		fail(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "presence needs a literal subject")
		return
	}
	if p == nil {
		fail(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "presence is not available on this node")
		return
	}
	if err := g.allowQuery(&c.ident, f.Subject); err != nil {
		p.m.queries.WithLabelValues("denied").Inc()
		c.respond(text, f.Id, err)
		return
	}
	if !c.allowPublish() {
		p.m.queries.WithLabelValues("rate_limit_exceeded").Inc()
		c.rateLimited(text, f.Id)
		return
	}
	// Who may subscribe to a room may see its members.
	if d, checked := g.decide(&c.ident, pb.PolicyAction_POLICY_ACTION_SUBSCRIBE, f.Subject, nil, nil); checked && !d.Allow {
		p.m.queries.WithLabelValues("denied").Inc()
		oe := policyError(d)
		c.replyError(text, f.Id, oe.Code, oe.Msg)
		return
	}
	if c.queries.Add(1) > maxQueriesPerConn {
		c.queries.Add(-1)
		c.limitHit("presence_queries")
		fail(pb.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED,
			"too many presence queries in flight (at most "+strconv.Itoa(maxQueriesPerConn)+")")
		return
	}
	data := presenceQueryBytes(c.ident.Tenant, f.Subject, f.CountOnly, int(f.Limit), f.Cursor)
	id, subject, countOnly := f.Id, strings.Clone(f.Subject), f.CountOnly
	go func() {
		defer c.queries.Add(-1)
		raw, err := p.queryRaw(context.Background(), data)
		if err != nil {
			c.queryFailed(text, id, pb.ErrorCode_ERROR_CODE_UNAVAILABLE, err.Error())
			return
		}
		if !text {
			// A Protobuf client gets the brain's members as they came.
			b, code, msg, err := presenceFrameProto(id, subject, raw)
			switch {
			case err != nil:
				p.m.errors.WithLabelValues("decode").Inc()
				c.queryFailed(text, id, pb.ErrorCode_ERROR_CODE_UNAVAILABLE, errNoBrain.Error())
			case code != pb.ErrorCode_ERROR_CODE_UNSPECIFIED:
				c.queryFailed(text, id, code, msg)
			default:
				p.m.queries.WithLabelValues("ok").Inc()
				c.enqueueForce(b)
			}
			return
		}
		var ans pb.PresenceAnswer
		if err := ans.UnmarshalVT(raw); err != nil {
			p.m.errors.WithLabelValues("decode").Inc()
			c.queryFailed(text, id, pb.ErrorCode_ERROR_CODE_UNAVAILABLE, errNoBrain.Error())
			return
		}
		if ans.Code != pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
			c.queryFailed(text, id, ans.Code, ans.Message)
			return
		}
		p.m.queries.WithLabelValues("ok").Inc()
		out := pb.ServerFrame{Op: pb.Op_OP_PRESENCE, Id: id, Subject: subject,
			Members: ans.Members, Count: ans.Count, Users: ans.Users, Cursor: ans.Cursor}
		if !countOnly && out.Members == nil {
			out.Members = []*pb.PresenceMember{} // an empty page, not a count_only answer
		}
		c.enqueueForce(encodeServerFrame(text, &out))
	}()
}

// queryFailed answers a presence query that failed after it was sent,
// from the query's goroutine, and counts it.
func (c *conn) queryFailed(text bool, id uint64, code pb.ErrorCode, msg string) {
	c.g.presence.m.queries.WithLabelValues(strings.ToLower(pb.CodeName(code))).Inc()
	c.g.metrics.frameError(code)
	c.enqueueForce(encodeServerFrame(text, &pb.ServerFrame{Op: pb.Op_OP_ERROR, Id: id,
		Error: &pb.Error{Code: code, Message: msg}}))
}

// presenceQueryBytes encodes a query for the brains (copying the strings,
// which may point into a read buffer), its limit clamped to a page.
func presenceQueryBytes(tenant, subject string, countOnly bool, limit int, cursor string) []byte {
	if limit <= 0 || limit > maxPresencePage {
		limit = maxPresencePage
	}
	q := pb.PresenceQuery{Tenant: tenant, Subject: subject, CountOnly: countOnly, Limit: uint32(limit), Cursor: cursor}
	data, _ := q.MarshalVT()
	return data
}

// errNoBrain is the message of a presence query no brain answered.
var errNoBrain = errors.New("no presence brain answered")

// queryRaw asks a brain and returns its encoded PresenceAnswer.
func (p *presence) queryRaw(ctx context.Context, data []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.QueryTimeout)
	defer cancel()
	msg, err := p.nc.RequestWithContext(ctx, p.querySubj, data)
	if err != nil {
		return nil, errNoBrain
	}
	return msg.Data, nil
}

// presenceFrameProto builds the PRESENCE frame (WebSocket header and
// Protobuf ServerFrame) for a brain's encoded PresenceAnswer without
// decoding its members: a PresenceAnswer's members (field 1) are, field
// number aside, a ServerFrame's members (field 13), so each is copied
// behind the frame's other fields. An answer carrying an error code
// returns the code and its message instead.
func presenceFrameProto(id uint64, subject string, raw []byte) (*pool.Buf, pb.ErrorCode, string, error) {
	f := pb.ServerFrame{Op: pb.Op_OP_PRESENCE, Id: id, Subject: subject}
	var code pb.ErrorCode
	var msg string
	membersSize := 0
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, "", protowire.ParseError(n)
		}
		b = b[n:]
		var m int
		switch {
		case num == 1 && typ == protowire.BytesType:
			var v []byte
			v, m = protowire.ConsumeBytes(b)
			membersSize += 1 + protowire.SizeBytes(len(v))
		case (num == 2 || num == 3 || num == 5) && typ == protowire.VarintType:
			var v uint64
			v, m = protowire.ConsumeVarint(b)
			switch num {
			case 2:
				f.Count = uint32(v)
			case 3:
				f.Users = uint32(v)
			default:
				code = pb.ErrorCode(v)
			}
		case (num == 4 || num == 6) && typ == protowire.BytesType:
			var v []byte
			v, m = protowire.ConsumeBytes(b)
			if num == 4 {
				f.Cursor = string(v)
			} else {
				msg = string(v)
			}
		default:
			m = protowire.ConsumeFieldValue(num, typ, b)
		}
		if m < 0 {
			return nil, 0, "", protowire.ParseError(m)
		}
		b = b[m:]
	}
	if code != pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		return nil, code, msg, nil
	}
	hs := f.SizeVT()
	n := hs + membersSize
	hl := serverHeaderLen(n)
	buf := pool.Get(hl + n)
	if _, err := f.MarshalToSizedBufferVT(buf.B[hl : hl+hs]); err != nil {
		buf.Release()
		return nil, 0, "", err
	}
	out := buf.B[:hl+hs]
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			out = protowire.AppendTag(out, 13, protowire.BytesType)
			out = protowire.AppendBytes(out, v)
			b = b[m:]
			continue
		}
		b = b[protowire.ConsumeFieldValue(num, typ, b):]
	}
	if len(out) != hl+n || &out[0] != &buf.B[0] { // sizes computed above
		buf.Release()
		return nil, 0, "", errors.New("gateway: presence frame size mismatch")
	}
	putServerHeader(buf.B, hl, ws.OpBinary, n)
	return buf, 0, "", nil
}

// queryCtx asks a brain and decodes its answer, bounded by ctx as well
// as QueryTimeout.
func (p *presence) queryCtx(ctx context.Context, data []byte) (*pb.PresenceAnswer, error) {
	raw, err := p.queryRaw(ctx, data)
	if err != nil {
		return nil, err
	}
	var ans pb.PresenceAnswer
	if err := ans.UnmarshalVT(raw); err != nil {
		p.m.errors.WithLabelValues("decode").Inc()
		return nil, errNoBrain
	}
	return &ans, nil
}
