package api

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/router"
)

// NATSQueue is the queue group of the NATS API: one node answers each
// request.
const NATSQueue = "api"

// ServeNATS answers API publishes sent as NATS requests to
// "<prefix>.$api.<tenant>.publish" (pb.ApiPublish -> pb.ApiReply) on nc,
// in the queue group "api", with g's checks and policies; the tenant is
// the subject's. It returns the subscription (Unsubscribe stops it).
// Access is NATS's to grant: only credentials allowed to publish there
// can. Metrics go to s when it is not nil.
func ServeNATS(nc *nats.Conn, prefix string, g *gateway.Gateway, s *Server) (*nats.Subscription, error) {
	if nc == nil || g == nil {
		return nil, errors.New("api: ServeNATS needs a NATS connection and a gateway")
	}
	subjPrefix := prefix + ".$api."
	sub, err := nc.QueueSubscribe(subjPrefix+"*.publish", NATSQueue, func(m *nats.Msg) {
		tenant := strings.TrimSuffix(strings.TrimPrefix(m.Subject, subjPrefix), ".publish")
		reply := natsPublish(g, s, tenant, m.Data)
		data, _ := reply.MarshalVT()
		_ = m.Respond(data)
	})
	if err != nil {
		return nil, fmt.Errorf("api: nats: %w", err)
	}
	return sub, nil
}

func natsPublish(g *gateway.Gateway, s *Server, tenant string, data []byte) *pb.ApiReply {
	count := func(e *apiError) {
		if s != nil {
			s.count("nats_publish", e)
		}
	}
	invalid := func(msg string) *pb.ApiReply {
		count(&apiError{Code: "VALIDATION_ERROR"})
		return &pb.ApiReply{Code: pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, Message: msg}
	}
	if auth.ValidateTenant(tenant) != nil {
		return invalid("invalid tenant in the subject")
	}
	var p pb.ApiPublish
	if err := p.UnmarshalVT(data); err != nil {
		return invalid("malformed ApiPublish")
	}
	if (p.Subject == "") == (len(p.Subjects) == 0) {
		return invalid("give subject or subjects")
	}
	if len(p.Data) > g.MaxMessageBytes() {
		return invalid(fmt.Sprintf("data larger than %d bytes", g.MaxMessageBytes()))
	}
	subjects := p.Subjects
	if p.Subject != "" {
		subjects = []string{p.Subject}
	}
	for _, subj := range subjects {
		if router.ValidateSubject(subj) != nil {
			return invalid("invalid subject " + subj)
		}
	}
	id := &auth.Identity{Tenant: tenant, User: "api:nats", Role: "api"}
	results := make([]*pb.ApiReply, len(subjects))
	for i, subj := range subjects {
		m := gateway.Message{Subject: subj, Data: p.Data, Text: p.Text, Headers: p.Headers}
		results[i] = &pb.ApiReply{}
		var e *apiError
		if err := g.Publish(id, &m); err != nil {
			e = fromOp(err)
			results[i].Code = pb.ErrorCode(pb.ErrorCode_value["ERROR_CODE_"+e.Code])
			results[i].Message = e.Message
		}
		count(e)
	}
	if p.Subject != "" {
		return results[0]
	}
	return &pb.ApiReply{Results: results}
}
