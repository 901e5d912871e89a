package gateway

import (
	"errors"
	"strings"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
)

// Capabilities: what a token's capabilities claim allows (auth.Grants),
// enforced by the bus operations. The upgrade compiles them once per
// connection into the identity (Identity.Grants); an identity that comes
// without compiled grants (a backend's, through Publish) is compiled on the
// call. Every refusal is AUTHORIZATION_DENIED, counted in
// arq_capability_denies_total{action}.
//
//	sub       a subscription pattern must be covered by the sub: capabilities
//	pub       a publish subject must match a pub: capability
//	presence  a presence sub needs both (it is a sub) and a presence: match
//	query     a presence query needs a presence: match
//
// Personal subjects (Config.PersonalPrefix, e.g. "user"): subjects
// <prefix>.<sub>.> belong to the user <sub>. A subscription, presence sub
// or presence query whose pattern can match another user's personal
// subject is refused unless sub: capabilities whose first token is the
// prefix itself cover the whole pattern (an explicit grant, e.g.
// sub:user.*.inbox for a support agent; sub:> alone is not one). Anyone
// may publish to a personal subject (pub: capabilities still apply): that
// is how a backend or another user reaches one user on all their devices.

// ErrCapabilityDenied: the token's capabilities do not allow the operation.
var ErrCapabilityDenied = errors.New("gateway: not allowed by the token's capabilities")

// Capability-deny actions (the metric's label).
const (
	capSub      = "sub"
	capPub      = "pub"
	capPresence = "presence"
	capQuery    = "presence_query"
	capPersonal = "personal"
)

// grantsOf returns id's grants, compiling them if nobody did. A claim that
// does not compile grants nothing.
func grantsOf(id *auth.Identity) *auth.Grants {
	if id.Grants != nil || id.Capabilities == nil {
		return id.Grants
	}
	g, err := auth.CompileCapabilities(id.Capabilities, false)
	if err != nil {
		g, _ = auth.CompileCapabilities([]string{}, false)
	}
	return g
}

func (g *Gateway) capDenied(action, msg string) *OpError {
	g.metrics.capabilityDenies.WithLabelValues(action).Inc()
	return opError(pb.ErrorCode_ERROR_CODE_AUTHORIZATION_DENIED, ErrCapabilityDenied, msg)
}

// allowPublishTo checks a publish subject (valid) against id's grants.
func (g *Gateway) allowPublishTo(id *auth.Identity, subject string) error {
	if gr := grantsOf(id); gr != nil && !gr.CanPublish(subject) {
		return g.capDenied(capPub, "publish to "+subject+" not allowed by the token's capabilities")
	}
	return nil
}

// allowSubscribe checks a subscription pattern (valid; a literal room with
// presence) against id's grants and the personal-subject rule.
func (g *Gateway) allowSubscribe(id *auth.Identity, pattern string, presence bool) error {
	gr := grantsOf(id)
	if gr != nil && !gr.CanSubscribe(pattern) {
		return g.capDenied(capSub, "subscribe to "+pattern+" not allowed by the token's capabilities")
	}
	if presence && gr != nil && !gr.CanPresence(pattern) {
		return g.capDenied(capPresence, "presence in "+pattern+" not allowed by the token's capabilities")
	}
	return g.allowPersonal(id, gr, pattern)
}

// allowQuery checks a presence query of room (valid, literal).
func (g *Gateway) allowQuery(id *auth.Identity, room string) error {
	gr := grantsOf(id)
	if gr != nil && !gr.CanPresence(room) {
		return g.capDenied(capQuery, "presence of "+room+" not allowed by the token's capabilities")
	}
	return g.allowPersonal(id, gr, room)
}

// allowPersonal applies the personal-subject rule to a read of pattern.
func (g *Gateway) allowPersonal(id *auth.Identity, gr *auth.Grants, pattern string) error {
	prefix := g.cfg.PersonalPrefix
	if prefix == "" || !reachesOthers(pattern, prefix, id.User) || gr.SubscribeNames(pattern, prefix) {
		return nil
	}
	return g.capDenied(capPersonal, pattern+" reaches other users' personal subjects ("+prefix+".<user>.>)")
}

// reachesOthers reports whether pattern (valid) can match a subject
// prefix.X.rest with X other than user (rest one token or more).
func reachesOthers(pattern, prefix, user string) bool {
	t0, rest, more := strings.Cut(pattern, ".")
	switch {
	case t0 == ">":
		return true
	case t0 != prefix && t0 != "*", !more:
		return false
	}
	t1, _, more := strings.Cut(rest, ".")
	switch {
	case t1 == ">":
		return true
	case t1 != "*" && t1 == user:
		return false
	}
	return more // a third token: the rest of a personal subject
}
