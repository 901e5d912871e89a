package gateway

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/policy"
	"github.com/arqonbus/arqonbus/router"
)

// Bus operations. Publish, subscribe, unsubscribe and leave are operations
// of the gateway on an authenticated identity, not of the WebSocket: the
// connection (handlers.go) decodes a frame, calls one of them and turns its
// error into an ERROR frame; the server API calls Publish the same way.
// Presence (presence.go) observes joins and leaves through memberObserver.

// Errors of the bus operations. Each reaches the caller wrapped in an
// *OpError carrying the protocol's error code and a message for clients;
// match them with errors.Is.
var (
	ErrInvalidSubject    = errors.New("gateway: invalid subject")
	ErrInvalidRequest    = errors.New("gateway: invalid request")
	ErrPolicyDenied      = errors.New("gateway: denied by policy")
	ErrRateLimited       = errors.New("gateway: rate limit exceeded")
	ErrSubscriptionLimit = errors.New("gateway: subscription limit reached")
	ErrNotSubscribed     = errors.New("gateway: not subscribed")
	ErrSpineUnavailable  = errors.New("gateway: delivered on this node only: the spine is unavailable")
	ErrUnavailable       = errors.New("gateway: presence unavailable")
	ErrInternal          = errors.New("gateway: internal error")
)

// An OpError is a refused bus operation: Err is one of the sentinel errors
// above, Code the ERROR frame's code and Msg its message.
type OpError struct {
	Code pb.ErrorCode
	Msg  string
	Err  error
}

func (e *OpError) Error() string { return e.Err.Error() + ": " + e.Msg }
func (e *OpError) Unwrap() error { return e.Err }

func opError(code pb.ErrorCode, sentinel error, msg string) *OpError {
	return &OpError{Code: code, Msg: msg, Err: sentinel}
}

// subjectMessages are the client-facing texts of the router's subject
// errors.
var subjectMessages = []struct {
	err error
	msg string
}{
	{router.ErrEmptySubject, "empty subject"},
	{router.ErrSubjectTooLong, "subject too long"},
	{router.ErrTooManyTokens, "too many tokens"},
	{router.ErrEmptyToken, "empty token"},
	{router.ErrInvalidChar, "invalid character"},
	{router.ErrWildcardInPublish, "wildcard in publish subject"},
	{router.ErrBadWildcard, "bad wildcard"},
}

// subjectError turns a router validation error into a VALIDATION_ERROR.
func subjectError(err error) *OpError {
	msg := "invalid subject"
	for _, m := range subjectMessages {
		if errors.Is(err, m.err) {
			msg = "invalid subject: " + m.msg
			break
		}
	}
	return opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrInvalidSubject, msg)
}

func policyError(d policy.Decision) *OpError {
	msg := d.Message
	if msg == "" {
		msg = "denied by policy"
	}
	return opError(d.ErrorCode(), ErrPolicyDenied, msg)
}

// Message is one publish.
type Message struct {
	// Subject is literal (no wildcards), inside the publisher's tenant.
	Subject string
	Data    []byte
	Headers []*pb.Header
	// Text marks Data as UTF-8 text; it is checked.
	Text bool
	// Session is the publisher's session id ("" for a backend).
	Session string

	// textChecked: Data and Headers are known to be valid UTF-8 (they
	// came in a text frame, which was checked whole).
	textChecked bool
}

// Header keys the gateway lifts into envelope fields.
const (
	HeaderTraceID = "trace-id"
	HeaderTwistID = "twist-id"
)

// Publish routes m for identity id: it validates the subject and text,
// checks id's capabilities (capabilities.go), asks the tenant's PUBLISH
// policy, delivers to this node's subscribers
// and hands the message to the spine for the other nodes. An error is an
// *OpError; ErrSpineUnavailable means this node's subscribers got it but
// the others may not.
func (g *Gateway) Publish(id *auth.Identity, m *Message) error {
	// The subscribers' writes leave together once routing is done.
	fl := getFlushList()
	defer fl.run()
	return g.publish(id, m, fl)
}

// publish is Publish with the flush list of the client read that carried
// it (nil: each subscriber's queue gets a writer of its own).
func (g *Gateway) publish(id *auth.Identity, m *Message, fl *flushList) error {
	if err := router.ValidateSubject(m.Subject); err != nil {
		return subjectError(err)
	}
	if err := g.allowPublishTo(id, m.Subject); err != nil {
		return err
	}
	if !m.textChecked {
		if m.Text && !utf8.Valid(m.Data) {
			return opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrInvalidRequest, "text data is not valid UTF-8")
		}
		for _, h := range m.Headers {
			if !utf8.ValidString(h.Key) || !utf8.ValidString(h.Value) {
				return opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrInvalidRequest, "header is not valid UTF-8")
			}
		}
	}
	if d, checked := g.decide(id, pb.PolicyAction_POLICY_ACTION_PUBLISH, m.Subject, m.Headers, m.Data); checked && !d.Allow {
		return policyError(d)
	}
	env := pb.Envelope{
		Tenant:           id.Tenant,
		Subject:          m.Subject,
		Payload:          m.Data,
		Headers:          m.Headers,
		Timestamp:        g.wallClock(),
		PublisherSession: m.Session,
		Text:             m.Text,
	}
	for _, h := range m.Headers {
		switch h.Key {
		case HeaderTraceID:
			env.TraceId = h.Value
		case HeaderTwistID:
			env.TwistId = h.Value
		}
	}
	g.metrics.messagesIn.Inc()
	// The other nodes first: their fan-out starts while this node's is
	// being listed (the local writes happen after the read anyway, when
	// its flush list runs), so a big local room does not delay the rest.
	var spineErr error
	if g.spine != nil {
		spineErr = g.spine.Publish(&env)
	}
	g.route(&env, fl)
	if spineErr != nil {
		g.metrics.spinePublishErrors.Inc()
		return opError(pb.ErrorCode_ERROR_CODE_INTERNAL_ERROR, ErrSpineUnavailable,
			"delivered on this node only: the spine is unavailable")
	}
	return nil
}

// subscribeOptions are a subscription's extras.
type subscribeOptions struct {
	// presence makes the connection a member of the room (a literal
	// subject); info is its client info (a JSON object or nil).
	presence bool
	info     []byte
}

// maxInfoBytes bounds a presence member's client info.
const maxInfoBytes = 256

// subscribe adds pattern to c's subscriptions (idempotent), after the
// limit and the tenant's SUBSCRIBE policy; with presence it also makes c a
// member of the room. pattern may point into a reused buffer: it is cloned
// when kept. Runs on c's reader.
func (g *Gateway) subscribe(c *conn, pattern string, opt subscribeOptions) error {
	if err := router.ValidatePattern(pattern); err != nil {
		return subjectError(err)
	}
	if opt.presence {
		if err := g.checkPresence(pattern, opt.info); err != nil {
			return err
		}
	}
	if err := g.allowSubscribe(&c.ident, pattern, opt.presence); err != nil {
		return err
	}
	subscribed := false
	for _, p := range c.subs {
		if p == pattern {
			subscribed = true
			break
		}
	}
	if subscribed && (!opt.presence || g.members.isMember(c, pattern)) {
		return nil // already subscribed: idempotent
	}
	if !subscribed && len(c.subs) >= g.cfg.MaxSubscriptions {
		c.limitHit("subscriptions")
		return opError(pb.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED, ErrSubscriptionLimit,
			"subscription limit reached ("+strconv.Itoa(g.cfg.MaxSubscriptions)+")")
	}
	if d, checked := g.decide(&c.ident, pb.PolicyAction_POLICY_ACTION_SUBSCRIBE, pattern, nil, nil); checked && !d.Allow {
		return policyError(d)
	}
	if !subscribed {
		pattern = strings.Clone(pattern)
		// nsubs first: once the router holds the pattern, deliveries
		// must already dedupe this connection's overlapping patterns.
		c.nsubs.Store(int32(len(c.subs) + 1))
		if err := g.subscribeRoute(c, pattern); err != nil {
			c.nsubs.Store(int32(len(c.subs)))
			return opError(pb.ErrorCode_ERROR_CODE_INTERNAL_ERROR, ErrInternal, "subscribe failed")
		}
		c.subs = append(c.subs, pattern)
	}
	if opt.presence {
		if subscribed {
			pattern = strings.Clone(pattern)
		}
		c.nrooms++
		g.members.joined(c, pattern, opt.info)
	}
	return nil
}

// checkPresence validates a presence subscription's subject and info.
func (g *Gateway) checkPresence(subject string, info []byte) error {
	if g.members == nil {
		return opError(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, ErrUnavailable, "presence is not available on this node")
	}
	if err := router.ValidateSubject(subject); err != nil {
		return opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrInvalidSubject, "presence needs a literal subject")
	}
	if len(info) > maxInfoBytes {
		g.metrics.limit("presence_info_bytes")
		return opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrInvalidRequest,
			"info too large (at most "+strconv.Itoa(maxInfoBytes)+" bytes)")
	}
	if len(info) > 0 && !pb.IsJSONObject(info) {
		return opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrInvalidRequest, "info must be a JSON object")
	}
	return nil
}

// unsubscribe removes pattern from c's subscriptions; a presence member of
// the room leaves it ("unsubscribe"). Runs on c's reader.
func (g *Gateway) unsubscribe(c *conn, pattern string) error {
	if err := router.ValidatePattern(pattern); err != nil {
		return subjectError(err)
	}
	for i, p := range c.subs {
		if p == pattern {
			g.leaveRoom(c, p, reasonUnsubscribe)
			g.unsubscribeRoute(c, p)
			last := len(c.subs) - 1
			c.subs[i] = c.subs[last]
			c.subs[last] = ""
			c.subs = c.subs[:last]
			c.nsubs.Store(int32(len(c.subs)))
			return nil
		}
	}
	return opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrNotSubscribed, "not subscribed to "+pattern)
}

// leave ends every subscription of c, which is gone: its rooms see it
// leave for the reason recorded on the connection. Runs in the close
// callback.
func (g *Gateway) leave(c *conn) {
	if c.nrooms > 0 {
		g.members.leftAll(c, c.leaveReason())
		c.nrooms = 0
	}
	for _, p := range c.subs {
		g.unsubscribeRoute(c, p)
	}
	c.subs = nil
	c.nsubs.Store(0)
}

// leaveRoom ends c's membership of room, if it is a member.
func (g *Gateway) leaveRoom(c *conn, room string, reason leaveReason) {
	if c.nrooms > 0 && g.members.left(c, room, reason) {
		c.nrooms--
	}
}

// memberObserver is told of presence joins and leaves (presence.go). It
// runs on the connection's reader or close callback and must not block.
type memberObserver interface {
	// joined makes c a member of room (c is not one yet).
	joined(c *conn, room string, info []byte)
	// left ends c's membership of room and reports whether it had one.
	left(c *conn, room string, reason leaveReason) bool
	// leftAll ends every membership of c.
	leftAll(c *conn, reason leaveReason)
	// isMember reports whether c is a member of room.
	isMember(c *conn, room string) bool
}

// leaveReason says why a member left a room; the first reason recorded on
// a connection wins, and a connection that ends with none was reset.
type leaveReason uint32

const (
	reasonNone leaveReason = iota
	reasonUnsubscribe
	reasonClose
	reasonReset
	reasonPingTimeout
	reasonTokenExpired
	reasonShutdown
	reasonSlowConsumer
	reasonKicked
)

var leaveReasonNames = [...]string{
	reasonNone:         "reset",
	reasonUnsubscribe:  "unsubscribe",
	reasonClose:        "close",
	reasonReset:        "reset",
	reasonPingTimeout:  "ping_timeout",
	reasonTokenExpired: "token_expired",
	reasonShutdown:     "shutdown",
	reasonSlowConsumer: "slow_consumer",
	reasonKicked:       "kicked",
}

func (r leaveReason) String() string {
	if int(r) < len(leaveReasonNames) {
		return leaveReasonNames[r]
	}
	return "reset"
}

// closeReason records why c is closing, unless a reason is already set.
func (c *conn) closeReason(r leaveReason) {
	c.reason.CompareAndSwap(uint32(reasonNone), uint32(r))
}

// leaveReason is the recorded reason, or reset when there is none.
func (c *conn) leaveReason() leaveReason {
	if r := leaveReason(c.reason.Load()); r != reasonNone {
		return r
	}
	return reasonReset
}
