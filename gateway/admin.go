package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/router"
)

// Operations for backends and operators (the server API): disconnecting
// sessions, asking for presence without a connection, and what the node
// holds.

// ErrBadCloseCode: a disconnect code outside 1000 and 3000-4999.
var ErrBadCloseCode = errors.New("gateway: close code must be 1000 or 3000-4999")

// Disconnect closes the sessions of user in tenant (all of them, or only
// the one named session when session is not empty) with the WebSocket close
// code and reason; their presence memberships leave with the reason
// "kicked". It returns how many connections it closed. code 0 means 1000.
func (g *Gateway) Disconnect(tenant, user, session string, code uint16, reason string) (int, error) {
	if code == 0 {
		code = closeNormal
	}
	if code != closeNormal && (code < 3000 || code > 4999) {
		return 0, ErrBadCloseCode
	}
	if reason == "" {
		reason = "disconnected by the server"
	}
	n := 0
	g.reg.each(func(c *conn) {
		if c.state.Load() != stateOpen || c.ident.Tenant != tenant {
			return
		}
		if (session != "" && c.id != session) || (session == "" && c.ident.User != user) {
			return
		}
		c.closeReason(reasonKicked)
		c.goAway(code, reason)
		n++
	})
	g.metrics.disconnects.Add(float64(n))
	return n, nil
}

// DisconnectEverywhere is Disconnect on this node and, through the spine,
// on every other node (each closes its own matching sessions). It returns
// the connections closed on this node.
func (g *Gateway) DisconnectEverywhere(tenant, user, session string, code uint16, reason string) (int, error) {
	n, err := g.Disconnect(tenant, user, session, code, reason)
	if err != nil || g.spine == nil {
		return n, err
	}
	cmd := pb.DisconnectCommand{Tenant: tenant, User: user, Session: session, Code: uint32(code), Reason: reason, OriginNode: g.cfg.NodeID}
	data, _ := cmd.MarshalVT()
	if err := g.spine.Conn().Publish(g.spine.Prefix()+".$ctl.disconnect", data); err != nil {
		return n, opError(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, ErrSpineUnavailable, "disconnected on this node only: the spine is unavailable")
	}
	return n, nil
}

// onDisconnectCommand runs another node's DisconnectEverywhere here.
func (g *Gateway) onDisconnectCommand(data []byte) {
	var cmd pb.DisconnectCommand
	if err := cmd.UnmarshalVT(data); err != nil || cmd.OriginNode == g.cfg.NodeID || cmd.Code > 0xffff {
		return
	}
	_, _ = g.Disconnect(cmd.Tenant, cmd.User, cmd.Session, uint16(cmd.Code), cmd.Reason)
}

// SpineConn is the node's NATS connection (nil without a spine), for
// services that answer on the bus beside the gateway (the NATS API).
func (g *Gateway) SpineConn() *nats.Conn {
	if g.spine == nil {
		return nil
	}
	return g.spine.Conn()
}

// MaxMessageBytes is the largest payload a publish may carry (the
// WebSocket frame limit, MaxFrameBytes).
func (g *Gateway) MaxMessageBytes() int { return g.cfg.MaxFrameBytes }

// PresenceOptions shape a presence query.
type PresenceOptions struct {
	CountOnly bool
	Limit     int // members per page; 0 or above 1000 means 1000
	Cursor    string
}

// Presence asks a brain for the members (or, with CountOnly, the counts) of
// a room of tenant. An error is an *OpError: VALIDATION_ERROR for a bad
// subject, UNAVAILABLE when presence is off on this node, no brain answers
// within the query timeout or the brain's store is down.
func (g *Gateway) Presence(ctx context.Context, tenant, subject string, o PresenceOptions) (*pb.PresenceAnswer, error) {
	if err := router.ValidateSubject(subject); err != nil {
		return nil, opError(pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR, ErrInvalidSubject, "presence needs a literal subject")
	}
	p := g.presence
	if p == nil {
		return nil, opError(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, ErrUnavailable, "presence is not available on this node")
	}
	ans, err := p.queryCtx(ctx, presenceQueryBytes(tenant, subject, o.CountOnly, o.Limit, o.Cursor))
	if err != nil {
		p.m.queries.WithLabelValues("unavailable").Inc()
		return nil, opError(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, ErrUnavailable, err.Error())
	}
	if ans.Code != pb.ErrorCode_ERROR_CODE_UNSPECIFIED {
		sentinel := ErrUnavailable
		if ans.Code == pb.ErrorCode_ERROR_CODE_VALIDATION_ERROR {
			sentinel = ErrInvalidRequest
		}
		return nil, opError(ans.Code, sentinel, ans.Message)
	}
	p.m.queries.WithLabelValues("ok").Inc()
	if !o.CountOnly && ans.Members == nil {
		ans.Members = []*pb.PresenceMember{}
	}
	return ans, nil
}

// ClusterInfo asks every node on the spine for its Info (this node's
// comes first) and returns the answers that arrived within wait.
func (g *Gateway) ClusterInfo(wait time.Duration, maxTenants int) []NodeInfo {
	out := []NodeInfo{g.Info(maxTenants)}
	if g.spine == nil {
		return out
	}
	nc := g.spine.Conn()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return out
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(g.spine.Prefix()+".$ctl.info", inbox, []byte(strconv.Itoa(maxTenants))); err != nil {
		return out
	}
	deadline := time.Now().Add(wait)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return out // the deadline: whoever answered
		}
		var ni NodeInfo
		if json.Unmarshal(m.Data, &ni) == nil && ni.Node != g.cfg.NodeID {
			out = append(out, ni)
		}
	}
}

// onInfoRequest answers another node's ClusterInfo.
func (g *Gateway) onInfoRequest(m *nats.Msg) {
	n, _ := strconv.Atoi(string(m.Data))
	data, err := json.Marshal(g.Info(n))
	if err == nil && m.Reply != "" {
		_ = m.Respond(data)
	}
}

// TenantInfo is what this node holds of one tenant.
type TenantInfo struct {
	Tenant        string `json:"tenant"`
	Connections   int    `json:"connections"`
	Subscriptions int    `json:"subscriptions"`
}

// NodeInfo is what this node holds.
type NodeInfo struct {
	Node          string       `json:"node"`
	Ready         bool         `json:"ready"`
	Connections   int          `json:"connections"`
	Subscriptions int          `json:"subscriptions"`
	Tenants       []TenantInfo `json:"tenants"`
	// TenantsTruncated: only the maxTenants busiest tenants are listed.
	TenantsTruncated bool `json:"tenants_truncated,omitempty"`
}

// Info reports this node's connections and subscriptions, per tenant
// (the busiest maxTenants, most connections first).
func (g *Gateway) Info(maxTenants int) NodeInfo {
	per := map[string]*TenantInfo{}
	info := NodeInfo{Node: g.cfg.NodeID, Ready: g.Ready()}
	g.reg.each(func(c *conn) {
		if c.state.Load() != stateOpen {
			return
		}
		t := per[c.ident.Tenant]
		if t == nil {
			t = &TenantInfo{Tenant: c.ident.Tenant}
			per[c.ident.Tenant] = t
		}
		subs := int(c.nsubs.Load())
		t.Connections++
		t.Subscriptions += subs
		info.Connections++
		info.Subscriptions += subs
	})
	for _, t := range per {
		info.Tenants = append(info.Tenants, *t)
	}
	sort.Slice(info.Tenants, func(i, j int) bool {
		a, b := info.Tenants[i], info.Tenants[j]
		if a.Connections != b.Connections {
			return a.Connections > b.Connections
		}
		return a.Tenant < b.Tenant
	})
	if maxTenants > 0 && len(info.Tenants) > maxTenants {
		info.Tenants = info.Tenants[:maxTenants]
		info.TenantsTruncated = true
	}
	return info
}
