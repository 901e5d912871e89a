package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/pb"
)

// NATSQueue is the queue group of the NATS API: one node answers each
// request.
const NATSQueue = "api"

// ServeNATS answers the API's commands sent as NATS requests to
// "<prefix>.$api.<tenant>.<command>" on nc, in the queue group "api", with
// g's checks and policies; the tenant is the subject's:
//
//	publish     pb.ApiPublish (subject, or subjects for a broadcast) -> pb.ApiReply
//	disconnect  pb.DisconnectCommand (its tenant ignored)           -> pb.ApiReply
//	presence    pb.PresenceQuery (its tenant ignored)               -> pb.PresenceAnswer
//	info        (empty)                                             -> JSON, as GET /api/v1/info for a tenant key
//
// A batch needs no command of its own on NATS: requests pipeline. It
// returns the subscription (Unsubscribe stops it). Access is NATS's to
// grant: only credentials allowed to publish there can. Metrics go to s
// when it is not nil.
func ServeNATS(nc *nats.Conn, prefix string, g *gateway.Gateway, s *Server) (*nats.Subscription, error) {
	if nc == nil || g == nil {
		return nil, errors.New("api: ServeNATS needs a NATS connection and a gateway")
	}
	subjPrefix := prefix + ".$api."
	sub, err := nc.QueueSubscribe(subjPrefix+"*.*", NATSQueue, func(m *nats.Msg) {
		tenant, command, _ := strings.Cut(strings.TrimPrefix(m.Subject, subjPrefix), ".")
		var reply interface{ MarshalVT() ([]byte, error) }
		switch command {
		case "publish":
			reply = natsPublish(g, s, tenant, m.Data)
		case "disconnect":
			reply = natsDisconnect(g, s, tenant, m.Data)
		case "presence":
			reply = natsPresence(g, tenant, m.Data)
		case "info":
			if auth.ValidateTenant(tenant) != nil {
				reply = &pb.ApiReply{Code: pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, Message: "invalid tenant in the subject"}
				break
			}
			srv := s
			if srv == nil {
				srv = &Server{g: g}
			}
			_, body := srv.info(context.Background(), &Key{Tenant: tenant}, nil)
			data, _ := json.Marshal(body)
			_ = m.Respond(data)
			return
		default:
			reply = &pb.ApiReply{Code: pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, Message: "unknown command " + command + " (publish, disconnect, presence, info)"}
		}
		data, _ := reply.MarshalVT()
		_ = m.Respond(data)
	})
	if err != nil {
		return nil, fmt.Errorf("api: nats: %w", err)
	}
	return sub, nil
}

func natsDisconnect(g *gateway.Gateway, s *Server, tenant string, data []byte) *pb.ApiReply {
	var d pb.DisconnectCommand
	if auth.ValidateTenant(tenant) != nil || d.UnmarshalVT(data) != nil || (d.User == "" && d.Session == "") || d.Code > 4999 || len(d.Reason) > 123 {
		if s != nil {
			s.count("nats_disconnect", &apiError{Code: "VALIDATION_ERROR"})
		}
		return &pb.ApiReply{Code: pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, Message: "a DisconnectCommand needs user or session, a code of 1000 or 3000-4999 and a reason of at most 123 bytes"}
	}
	_, err := g.DisconnectEverywhere(tenant, d.User, d.Session, uint16(d.Code), d.Reason)
	var e *apiError
	if errors.Is(err, gateway.ErrBadCloseCode) {
		e = &apiError{Code: "VALIDATION_ERROR", Message: "code must be 1000 or 3000-4999"}
	} else if err != nil {
		e = fromOp(err)
	}
	if s != nil {
		s.count("nats_disconnect", e)
	}
	if e != nil {
		return &pb.ApiReply{Code: pb.ErrorCode(pb.ErrorCode_value["ERROR_CODE_"+e.Code]), Message: e.Message}
	}
	return &pb.ApiReply{}
}

func natsPresence(g *gateway.Gateway, tenant string, data []byte) *pb.PresenceAnswer {
	var q pb.PresenceQuery
	if auth.ValidateTenant(tenant) != nil || q.UnmarshalVT(data) != nil {
		return &pb.PresenceAnswer{Code: pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, Message: "malformed PresenceQuery"}
	}
	ans, err := g.Presence(context.Background(), tenant, q.Subject, gateway.PresenceOptions{CountOnly: q.CountOnly, Limit: int(q.Limit), Cursor: q.Cursor})
	if err != nil {
		var oe *gateway.OpError
		if errors.As(err, &oe) {
			return &pb.PresenceAnswer{Code: oe.Code, Message: oe.Msg}
		}
		return &pb.PresenceAnswer{Code: pb.ErrorCode_ERROR_CODE_INTERNAL_ERROR, Message: "internal error"}
	}
	return ans
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
	subjects := p.Subjects
	if p.Subject != "" {
		subjects = []string{p.Subject}
	}
	id := &auth.Identity{Tenant: tenant, User: "api:nats", Role: "api"}
	m := gateway.Message{Data: p.Data, Text: p.Text, Headers: p.Headers}
	results, e := publishAll(g, id, subjects, m, maxNATSSubjects)
	if e != nil {
		return invalid(e.Message)
	}
	replies := make([]*pb.ApiReply, len(results))
	for i, r := range results {
		replies[i] = &pb.ApiReply{}
		if r.Error != nil {
			replies[i].Code = pb.ErrorCode(pb.ErrorCode_value["ERROR_CODE_"+r.Error.Code])
			replies[i].Message = r.Error.Message
		}
		count(r.Error)
	}
	if p.Subject != "" {
		return replies[0]
	}
	return &pb.ApiReply{Results: replies}
}

// maxNATSSubjects bounds a broadcast over NATS, as MaxCommands's default
// bounds one over HTTP.
const maxNATSSubjects = 1000
