package gateway

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/gobwas/ws"
	"github.com/nats-io/nuid"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/pool"
)

// SocketPath is the WebSocket endpoint.
const SocketPath = "/v1/socket"

// Subprotocols a client may ask for to pick its delivery codec.
const (
	SubprotocolJSON  = "arqon.v1.json"
	SubprotocolProto = "arqon.v1.proto"
)

// ProtocolVersion is sent in WELCOME.
const ProtocolVersion = 1

// upgradeState collects what the upgrade hooks see.
type upgradeState struct {
	token  string
	bearer string
	origin string
	codec  codec
}

var errNotFound = ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("not found"))

var errOrigin = ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin not allowed"))

func unauthorized(err error) error {
	// RFC 6750: no error code when the request carried no token.
	h := "WWW-Authenticate: Bearer realm=\"arqonbus\", error=\"invalid_token\"\r\n"
	if errors.Is(err, auth.ErrMissingToken) {
		h = "WWW-Authenticate: Bearer realm=\"arqonbus\"\r\n"
	}
	return ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusUnauthorized),
		ws.RejectionHeader(ws.HandshakeHeaderString(h)),
		ws.RejectionReason(strings.TrimPrefix(err.Error(), "auth: ")),
	)
}

// upgrade runs the WebSocket upgrade over a complete HTTP request. On
// success it queues the 101 response and the WELCOME frame; on failure the
// HTTP error response, then closes.
func (c *conn) upgrade(req []byte) {
	if !isUpgradeRequest(req) {
		c.serveHTTP(req) // static.go: a bounded answer, then close
		return
	}
	g := c.g
	st := upgradeState{}
	var id auth.Identity
	u := ws.Upgrader{
		Protocol: func(p []byte) bool {
			switch string(p) {
			case SubprotocolProto:
				st.codec = codecProto
				return true
			case SubprotocolJSON:
				st.codec = codecJSON
				return true
			}
			return false
		},
		OnRequest: func(uri []byte) error {
			path, query, _ := bytes.Cut(uri, []byte("?"))
			if string(path) != SocketPath {
				return errNotFound
			}
			if len(query) > 0 {
				q, err := url.ParseQuery(string(query))
				if err != nil {
					return ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest), ws.RejectionReason("bad query"))
				}
				st.token = q.Get("token")
				switch q.Get("codec") {
				case "proto", "protobuf":
					st.codec = codecProto
				}
			}
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if strings.EqualFold(string(key), "Authorization") {
				v := string(value)
				// Other schemes (e.g. Basic from a proxy) are not ours:
				// a ?token= still counts.
				if len(v) > 7 && strings.EqualFold(v[:7], "Bearer ") {
					st.bearer = strings.TrimSpace(v[7:])
				}
			} else if g.origins != nil && strings.EqualFold(string(key), "Origin") {
				st.origin = string(value)
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if g.draining.Load() {
				c.refuse("draining")
				return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusServiceUnavailable), ws.RejectionReason("draining"))
			}
			if g.origins != nil && st.origin != "" && !originAllowed(g.origins, st.origin) {
				c.refuse("origin")
				return nil, errOrigin
			}
			tok := st.bearer
			if tok == "" {
				tok = st.token
			}
			var err error
			id, err = g.cfg.Verifier.Verify(tok)
			if err != nil {
				c.refuse(authReason(err))
				return nil, unauthorized(err)
			}
			// Capabilities compiled once per connection.
			if id.Grants, err = auth.CompileCapabilities(id.Capabilities, g.cfg.RequireCapabilities); err != nil {
				c.refuse(authReason(err))
				return nil, unauthorized(err)
			}
			if d, checked := g.decide(&id, pb.PolicyAction_POLICY_ACTION_CONNECT, "", nil, nil); checked && !d.Allow {
				c.refuse("policy")
				return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden),
					ws.RejectionReason(d.Code+": "+d.Message))
			}
			return ws.HandshakeHeaderString(""), nil
		},
	}
	var resp bytes.Buffer
	_, err := u.Upgrade(&rw{r: bytes.NewReader(req), w: &resp})
	if err != nil {
		var rej *ws.ConnectionRejectedError
		if !errors.As(err, &rej) {
			c.refuse("bad_request")
		}
		c.rejectRaw(resp.String())
		return
	}
	c.ident = id
	c.codec = st.codec
	c.id = nuid.Next()
	c.state.Store(stateOpen)
	g.metrics.connections.Inc()

	hs := pool.Get(resp.Len())
	copy(hs.B, resp.Bytes())
	c.enqueueReply(hs)
	w := &pb.ServerFrame{
		Op: pb.Op_OP_WELCOME,
		Welcome: &pb.Welcome{
			SessionId: c.id,
			NodeId:    g.cfg.NodeID,
			Tenant:    id.Tenant,
			User:      id.User,
			Limits: &pb.Limits{
				MaxFrameBytes:       uint32(g.cfg.MaxFrameBytes),
				MaxSubscriptions:    uint32(g.cfg.MaxSubscriptions),
				OutboundBufferBytes: uint32(g.cfg.OutboundBufferBytes),
				PublishRate:         uint32(max(0, g.cfg.PublishRate)),
				PublishBurst:        uint32(max(0, g.cfg.PublishBurst)),
			},
			HeartbeatIntervalMs: uint32(g.cfg.HeartbeatInterval.Milliseconds()),
			ProtocolVersion:     ProtocolVersion,
		},
	}
	c.enqueueReply(encodeServerFrame(c.codec == codecJSON, w))
}

func authReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrMissingToken):
		return "missing_token"
	case errors.Is(err, auth.ErrExpired):
		return "expired"
	case errors.Is(err, auth.ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, auth.ErrBadAlgorithm):
		return "bad_algorithm"
	case errors.Is(err, auth.ErrBadTenant), errors.Is(err, auth.ErrClaims):
		return "bad_claims"
	case errors.Is(err, auth.ErrNotYetValid):
		return "not_yet_valid"
	case errors.Is(err, auth.ErrUnknownKey):
		return "unknown_key"
	case errors.Is(err, auth.ErrBadIssuer):
		return "bad_issuer"
	case errors.Is(err, auth.ErrBadAudience):
		return "bad_audience"
	case errors.Is(err, auth.ErrTenantNotAllowed):
		return "tenant_not_allowed"
	case errors.Is(err, auth.ErrBadCapabilities):
		return "bad_capabilities"
	}
	return "malformed"
}

// rw joins the buffered request and the response buffer for ws.Upgrader.
type rw struct {
	r *bytes.Reader
	w *bytes.Buffer
}

func (x *rw) Read(p []byte) (int, error)  { return x.r.Read(p) }
func (x *rw) Write(p []byte) (int, error) { return x.w.Write(p) }
