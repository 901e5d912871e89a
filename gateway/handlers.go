package gateway

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/valyala/fastjson"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/policy"
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
	case pb.Op_OP_PRESENCE:
		c.presenceQuery(text, f)
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

func (c *conn) subscribe(text bool, f *pb.ClientFrame) {
	c.respond(text, f.Id, c.g.subscribe(c, f.Subject, subscribeOptions{presence: f.Presence, info: f.Info}))
}

func (c *conn) unsubscribe(text bool, f *pb.ClientFrame) {
	c.respond(text, f.Id, c.g.unsubscribe(c, f.Subject))
}

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

// rateLimited answers a request refused by the connection's publish
// bucket.
func (c *conn) rateLimited(text bool, id uint64) {
	c.limitHit("publish_rate")
	c.replyError(text, id, pb.ErrorCode_ERROR_CODE_RATE_LIMIT_EXCEEDED,
		"publish rate limit exceeded ("+strconv.FormatFloat(c.g.cfg.PublishRate, 'f', -1, 64)+"/s)")
}

func (c *conn) publish(text bool, f *pb.ClientFrame) {
	if !c.allowPublish() {
		c.rateLimited(text, f.Id)
		return
	}
	m := Message{
		Subject:     f.Subject,
		Data:        f.Data,
		Headers:     f.Headers,
		Text:        f.Text,
		Session:     c.id,
		textChecked: text, // a text frame was checked whole
	}
	err := c.g.publish(&c.ident, &m, c.flush)
	if errors.Is(err, ErrSpineUnavailable) && !f.Ack {
		return // delivered locally; nobody asked
	}
	if err != nil || f.Ack {
		c.respond(text, f.Id, err)
	}
}

// respond answers a request: ACK for nil, else the operation's ERROR.
func (c *conn) respond(text bool, id uint64, err error) {
	if err == nil {
		c.ack(text, id)
		return
	}
	var oe *OpError
	if errors.As(err, &oe) {
		c.replyError(text, id, oe.Code, oe.Msg)
		return
	}
	c.replyError(text, id, pb.ErrorCode_ERROR_CODE_INTERNAL_ERROR, "internal error")
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
