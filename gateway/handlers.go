package gateway

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/policy"
	"github.com/arqonbus/arqonbus/router"
)

// decoder is per-message decoding scratch, pooled so idle connections hold
// none.
type decoder struct {
	parser  fastjson.Parser
	frame   pb.ClientFrame
	scratch []byte
}

var decoders = sync.Pool{New: func() any { return new(decoder) }}

// handleMessage decodes one data message and dispatches it.
func (c *conn) handleMessage(text bool, payload []byte) {
	d := decoders.Get().(*decoder)
	defer decoders.Put(d)
	f := &d.frame
	pb.ResetClientFrame(f)
	var err error
	if text {
		d.scratch, err = pb.DecodeClientJSON(&d.parser, payload, f, d.scratch)
	} else {
		err = f.UnmarshalVTUnsafe(payload)
		if err == nil && (f.Op == pb.Op_OP_UNSPECIFIED || f.Op >= pb.Op_OP_WELCOME) {
			err = &pb.FieldError{Field: "op " + strconv.Itoa(int(f.Op)), Err: pb.ErrUnknownOp}
		}
	}
	if err != nil {
		c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, decodeErrorMessage(err))
		return
	}
	switch f.Op {
	case pb.Op_OP_SUB:
		c.subscribe(text, f)
	case pb.Op_OP_UNSUB:
		c.unsubscribe(text, f)
	case pb.Op_OP_PUB:
		c.publish(text, f)
	case pb.Op_OP_PING:
		c.reply(text, &pb.ServerFrame{Op: pb.Op_OP_PONG, Id: f.Id})
	}
}

func decodeErrorMessage(err error) string {
	var fe *pb.FieldError
	switch {
	case errors.As(err, &fe) && errors.Is(err, pb.ErrUnknownOp):
		return "unknown op: " + fe.Field
	case errors.As(err, &fe):
		return "field " + fe.Field + " has the wrong type"
	case errors.Is(err, pb.ErrJSONSyntax):
		return "malformed JSON"
	case errors.Is(err, pb.ErrJSONNotObject):
		return "frame must be a JSON object"
	case errors.Is(err, pb.ErrBadBase64):
		return "data_b64 is not valid base64"
	case errors.Is(err, pb.ErrDataConflict):
		return "frame has both data and data_b64"
	}
	return "malformed Protobuf frame"
}

func subjectErrorMessage(err error) string {
	return "invalid subject: " + strings.TrimPrefix(err.Error(), "router: ")
}

func (c *conn) subscribe(text bool, f *pb.ClientFrame) {
	if err := router.ValidatePattern(f.Subject); err != nil {
		c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, subjectErrorMessage(err))
		return
	}
	for _, p := range c.subs {
		if p == f.Subject { // already subscribed: idempotent
			c.ack(text, f.Id)
			return
		}
	}
	if len(c.subs) >= c.g.cfg.MaxSubscriptions {
		c.g.metrics.limit("subscriptions")
		c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED,
			"subscription limit reached ("+strconv.Itoa(c.g.cfg.MaxSubscriptions)+")")
		return
	}
	if d, checked := c.g.decide(&c.ident, pb.PolicyAction_POLICY_ACTION_SUBSCRIBE, f.Subject, nil, nil); checked && !d.Allow {
		c.policyDenied(text, f.Id, d)
		return
	}
	pattern := strings.Clone(f.Subject) // f.Subject points into a reused buffer
	// nsubs first: once the router holds the pattern, deliveries must
	// already dedupe this connection's overlapping patterns.
	c.nsubs.Store(int32(len(c.subs) + 1))
	if err := c.g.subscribeRoute(c, pattern); err != nil {
		c.nsubs.Store(int32(len(c.subs)))
		c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_INTERNAL_ERROR, "subscribe failed")
		return
	}
	c.subs = append(c.subs, pattern)
	c.ack(text, f.Id)
}

func (c *conn) unsubscribe(text bool, f *pb.ClientFrame) {
	if err := router.ValidatePattern(f.Subject); err != nil {
		c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, subjectErrorMessage(err))
		return
	}
	for i, p := range c.subs {
		if p == f.Subject {
			c.g.unsubscribeRoute(c, p)
			last := len(c.subs) - 1
			c.subs[i] = c.subs[last]
			c.subs[last] = ""
			c.subs = c.subs[:last]
			c.nsubs.Store(int32(len(c.subs)))
			c.ack(text, f.Id)
			return
		}
	}
	c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "not subscribed to "+f.Subject)
}

// Header keys the gateway lifts into envelope fields.
const (
	HeaderTraceID = "trace-id"
	HeaderTwistID = "twist-id"
)

// allowPublish takes a token from the connection's publish bucket.
func (c *conn) allowPublish() bool {
	rate := c.g.cfg.PublishRate
	if rate < 0 {
		return true
	}
	now := c.g.now()
	if el := now - c.pubLast; el > 0 {
		c.pubTokens = min(float64(c.g.cfg.PublishBurst), c.pubTokens+float64(el)*rate/1e9)
		c.pubLast = now
	}
	if c.pubTokens < 1 {
		return false
	}
	c.pubTokens--
	return true
}

func (c *conn) publish(text bool, f *pb.ClientFrame) {
	if !c.allowPublish() {
		c.g.metrics.limit("publish_rate")
		c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_RATE_LIMIT_EXCEEDED,
			"publish rate limit exceeded ("+strconv.FormatFloat(c.g.cfg.PublishRate, 'f', -1, 64)+"/s)")
		return
	}
	if err := router.ValidateSubject(f.Subject); err != nil {
		c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, subjectErrorMessage(err))
		return
	}
	if !text {
		if f.Text && !utf8.Valid(f.Data) {
			c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "text data is not valid UTF-8")
			return
		}
		for _, h := range f.Headers {
			if !utf8.ValidString(h.Key) || !utf8.ValidString(h.Value) {
				c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, "header is not valid UTF-8")
				return
			}
		}
	}
	if d, checked := c.g.decide(&c.ident, pb.PolicyAction_POLICY_ACTION_PUBLISH, f.Subject, f.Headers, f.Data); checked && !d.Allow {
		c.policyDenied(text, f.Id, d)
		return
	}
	env := pb.Envelope{
		Tenant:           c.ident.Tenant,
		Subject:          f.Subject,
		Payload:          f.Data,
		Headers:          f.Headers,
		Timestamp:        c.g.wallClock(),
		PublisherSession: c.id,
		Text:             f.Text,
	}
	for _, h := range f.Headers {
		switch h.Key {
		case HeaderTraceID:
			env.TraceId = h.Value
		case HeaderTwistID:
			env.TwistId = h.Value
		}
	}
	c.g.metrics.messagesIn.Inc()
	c.g.route(&env, c.flush)
	if c.g.spine != nil {
		if err := c.g.spine.Publish(&env); err != nil {
			c.g.metrics.spinePublishErrors.Inc()
			if f.Ack {
				c.replyError(text, f.Id, pb.ErrorCode_ERROR_CODE_INTERNAL_ERROR,
					"delivered on this node only: the spine is unavailable")
			}
			return
		}
	}
	if f.Ack {
		c.ack(text, f.Id)
	}
}

// decide asks the policy engine, when this tenant has policies for the
// action. checked is false when no policy applies (nothing was asked).
func (g *Gateway) decide(id *auth.Identity, action pb.PolicyAction, subject string, headers []*pb.Header, payload []byte) (d policy.Decision, checked bool) {
	e := g.cfg.Policy
	if e == nil {
		return d, false
	}
	if !e.HasPoliciesFor(id.Tenant, action) {
		if g.policyDefault.Allow {
			return d, false
		}
		g.metrics.policyDenies.WithLabelValues(pb.PolicyAction_name[int32(action)], g.policyDefault.Code).Inc()
		return g.policyDefault, true
	}
	req := pb.PolicyRequest{
		Action:       action,
		Tenant:       id.Tenant,
		User:         id.User,
		Role:         id.Role,
		Capabilities: id.Capabilities,
		Subject:      subject,
		Headers:      headers,
		PayloadSize:  uint32(len(payload)),
	}
	if action == pb.PolicyAction_POLICY_ACTION_PUBLISH && e.NeedsPayload(id.Tenant) {
		req.Payload = payload
	}
	d = e.Decide(context.Background(), &req)
	if !d.Allow {
		g.metrics.policyDenies.WithLabelValues(pb.PolicyAction_name[int32(action)], d.Code).Inc()
	}
	return d, true
}

func (c *conn) policyDenied(text bool, id uint64, d policy.Decision) {
	code := d.ErrorCode()
	msg := d.Message
	if msg == "" {
		msg = "denied by policy"
	}
	c.replyError(text, id, code, msg)
}

func (c *conn) ack(text bool, id uint64) {
	c.reply(text, &pb.ServerFrame{Op: pb.Op_OP_ACK, Id: id})
}

// replyError sends an ERROR frame and counts it by code.
func (c *conn) replyError(text bool, id uint64, code pb.ErrorCode, msg string) {
	c.g.metrics.frameError(code)
	c.reply(text, &pb.ServerFrame{Op: pb.Op_OP_ERROR, Id: id, Error: &pb.Error{Code: code, Message: msg}})
}

// reply queues a response in the codec of the request it answers.
func (c *conn) reply(text bool, f *pb.ServerFrame) {
	c.enqueueReply(encodeServerFrame(text, f))
}
