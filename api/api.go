// Package api is ArqonBus's server API: HTTP JSON endpoints through which
// application backends publish to clients, see presence, disconnect
// sessions and read what a node holds, without a WebSocket.
//
// Every request carries an API key ("Authorization: apikey KEY"). A key is
// bound to one tenant, or is an admin key for every tenant; keys are
// compared in constant time and failures are counted. Publishes go through
// the same bus operation as a client's (gateway.Publish): the same subject
// and size validation, the tenant's Wasm PUBLISH policy (fail-closed), local
// fan-out and the spine. Errors are JSON: {"error":{"code":"...","message":"..."}}
// with the protocol's error codes (docs/API.md).
//
//	POST /api/v1/publish     {"tenant","subject","data"|"data_b64","headers"}
//	POST /api/v1/broadcast   {"tenant","subjects":[...],"data"|"data_b64","headers"}
//	POST /api/v1/batch       {"commands":[{"method":"publish","params":{...}},...]}
//	POST /api/v1/disconnect  {"tenant","user","session","code","reason"}
//	GET  /api/v1/presence?tenant=T&subject=S[&count_only=true][&limit=N][&cursor=C]
//	GET  /api/v1/info
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/gateway"
	"github.com/arqonbus/arqonbus/pb"
	"github.com/arqonbus/arqonbus/router"
)

// Errors returned by New.
var (
	ErrNoGateway = errors.New("api: Config.Gateway is required")
	ErrNoKeys    = errors.New("api: no API keys configured")
	ErrBadKey    = errors.New("api: an API key needs a name and at least 16 bytes of secret")
	ErrDupKey    = errors.New("api: two API keys share a name or a secret")
)

// Key is one API key.
type Key struct {
	// Name identifies the key in logs and metrics, and publishes made with
	// it carry the user "api:<name>" (what policies see).
	Name string
	// Secret is the key itself (at least 16 bytes).
	Secret string
	// Tenant binds the key to one tenant; empty makes it an admin key for
	// every tenant.
	Tenant string
}

// Config configures a Server. Zero fields mean the defaults shown.
type Config struct {
	// Gateway runs the operations. Required.
	Gateway *gateway.Gateway
	// Keys that may call the API. At least one.
	Keys []Key
	// MaxBodyBytes bounds a request body; default 8 MiB.
	MaxBodyBytes int64
	// MaxCommands bounds a batch's commands and a broadcast's subjects;
	// default 1000.
	MaxCommands int
	// Registerer receives the API's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Server serves the API; mount it with http.Handle("/api/", s).
type Server struct {
	cfg  Config
	g    *gateway.Gateway
	keys []hashedKey
	log  *slog.Logger
	mux  *http.ServeMux

	requests     *prometheus.CounterVec
	authFailures prometheus.Counter
	commands     *prometheus.CounterVec
	seconds      *prometheus.HistogramVec
}

type hashedKey struct {
	sum [32]byte
	key Key
}

// New checks the keys and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Gateway == nil {
		return nil, ErrNoGateway
	}
	if len(cfg.Keys) == 0 {
		return nil, ErrNoKeys
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 8 << 20
	}
	if cfg.MaxCommands <= 0 {
		cfg.MaxCommands = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, g: cfg.Gateway, log: cfg.Logger, mux: http.NewServeMux()}
	names := map[string]bool{}
	sums := map[[32]byte]bool{}
	for _, k := range cfg.Keys {
		if k.Name == "" || len(k.Secret) < 16 {
			return nil, fmt.Errorf("%w (key %q)", ErrBadKey, k.Name)
		}
		if k.Tenant != "" {
			if err := auth.ValidateTenant(k.Tenant); err != nil {
				return nil, fmt.Errorf("api: key %q: %w", k.Name, err)
			}
		}
		sum := sha256.Sum256([]byte(k.Secret))
		if names[k.Name] || sums[sum] {
			return nil, fmt.Errorf("%w (%q)", ErrDupKey, k.Name)
		}
		names[k.Name], sums[sum] = true, true
		s.keys = append(s.keys, hashedKey{sum: sum, key: k})
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arq_api_requests_total", Help: "Server API requests, by endpoint and HTTP status."}, []string{"endpoint", "status"})
	s.authFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "arq_api_auth_failures_total", Help: "Server API requests refused for a missing or unknown API key."})
	s.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "arq_api_commands_total", Help: "Server API commands (publishes, broadcast subjects, batch entries), by method and result."}, []string{"method", "result"})
	s.seconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "arq_api_request_duration_seconds", Help: "Server API request latency, by endpoint.",
		Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3, 1, 5}}, []string{"endpoint"})
	if r := cfg.Registerer; r != nil {
		for _, c := range []prometheus.Collector{s.requests, s.authFailures, s.commands, s.seconds} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("api: metrics: %w", err)
			}
		}
	}
	s.handle("POST /api/v1/publish", "publish", s.publish)
	s.handle("POST /api/v1/broadcast", "broadcast", s.broadcast)
	s.handle("POST /api/v1/batch", "batch", s.batch)
	s.handle("POST /api/v1/disconnect", "disconnect", s.disconnect)
	s.handle("GET /api/v1/presence", "presence", s.presence)
	s.handle("GET /api/v1/info", "info", s.info)
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s, nil
}

// ServeHTTP serves /api/v1/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// A handler answers one authenticated request: a status and a JSON body.
type handler func(ctx context.Context, key *Key, r *http.Request) (int, any)

func (s *Server) handle(pattern, endpoint string, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		status := s.serve(w, r, h)
		s.requests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
		s.seconds.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, h handler) int {
	key := s.authenticate(r)
	if key == nil {
		s.authFailures.Inc()
		w.Header().Set("WWW-Authenticate", `apikey realm="arqonbus"`)
		return writeError(w, http.StatusUnauthorized, "AUTHENTICATION_FAILED", "missing or unknown API key (Authorization: apikey KEY)")
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	status, body := h(r.Context(), key, r)
	if e, ok := body.(*apiError); ok {
		return writeError(w, status, e.Code, e.Message)
	}
	return writeJSON(w, status, body)
}

// authenticate finds the request's key, comparing against every key in
// constant time (the secret's SHA-256 against each key's).
func (s *Server) authenticate(r *http.Request) *Key {
	h := r.Header.Get("Authorization")
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "apikey") || secret == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	var found *Key
	for i := range s.keys {
		if subtle.ConstantTimeCompare(sum[:], s.keys[i].sum[:]) == 1 {
			found = &s.keys[i].key
		}
	}
	return found
}

// apiError is an error body: {"error":{"code":...,"message":...}}.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func badRequest(msg string) (int, any) {
	return http.StatusBadRequest, &apiError{Code: "VALIDATION_ERROR", Message: msg}
}

func writeError(w http.ResponseWriter, status int, code, msg string) int {
	return writeJSON(w, status, map[string]*apiError{"error": {Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, body any) int {
	b, err := json.Marshal(body)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"INTERNAL_ERROR","message":"could not encode the answer"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return status
}

// decode reads a JSON body strictly (unknown fields are an error).
func decode(r *http.Request, v any) error { return decodeStrict(r.Body, v) }

// decodeStrict reads one JSON value into v: unknown fields and anything
// after the value are errors.
func decodeStrict(rd io.Reader, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body larger than %d bytes", mbe.Limit)
		}
		return fmt.Errorf("malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("malformed JSON: data after the object")
	}
	return nil
}

// tenantFor checks that key may act for tenant.
func tenantFor(key *Key, tenant string) *apiError {
	if tenant == "" {
		return &apiError{Code: "VALIDATION_ERROR", Message: "tenant is required"}
	}
	if err := auth.ValidateTenant(tenant); err != nil {
		return &apiError{Code: "VALIDATION_ERROR", Message: "invalid tenant"}
	}
	if key.Tenant != "" && key.Tenant != tenant {
		return &apiError{Code: "AUTHORIZATION_DENIED", Message: "this API key is bound to another tenant"}
	}
	return nil
}

// statusOf maps an error code to an HTTP status.
func statusOf(code string) int {
	switch code {
	case "VALIDATION_ERROR":
		return http.StatusBadRequest
	case "AUTHENTICATION_FAILED":
		return http.StatusUnauthorized
	case "AUTHORIZATION_DENIED", "POLICY_BLOCKED":
		return http.StatusForbidden
	case "RATE_LIMIT_EXCEEDED", "LIMIT_EXCEEDED":
		return http.StatusTooManyRequests
	case "UNAVAILABLE":
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// fromOp turns a bus operation's error into an API error.
func fromOp(err error) *apiError {
	var oe *gateway.OpError
	if errors.As(err, &oe) {
		code := pb.CodeName(oe.Code)
		if errors.Is(err, gateway.ErrSpineUnavailable) {
			code = "UNAVAILABLE"
		}
		return &apiError{Code: code, Message: oe.Msg}
	}
	return &apiError{Code: "INTERNAL_ERROR", Message: "internal error"}
}

// Publication is the body of a publish (and of a broadcast, with
// Subjects).
type Publication struct {
	Tenant   string            `json:"tenant"`
	Subject  string            `json:"subject,omitempty"`
	Subjects []string          `json:"subjects,omitempty"`
	Data     *string           `json:"data,omitempty"`
	DataB64  *string           `json:"data_b64,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
}

// message checks p's payload and headers and builds the bus message
// (without its subject).
func (s *Server) message(p *Publication) (gateway.Message, *apiError) {
	var m gateway.Message
	switch {
	case p.Data != nil && p.DataB64 != nil:
		return m, &apiError{Code: "VALIDATION_ERROR", Message: "give data or data_b64, not both"}
	case p.Data != nil:
		m.Data, m.Text = []byte(*p.Data), true
	case p.DataB64 != nil:
		b, err := base64.StdEncoding.DecodeString(*p.DataB64)
		if err != nil {
			return m, &apiError{Code: "VALIDATION_ERROR", Message: "data_b64 is not valid base64"}
		}
		m.Data = b
	}
	for k, v := range p.Headers {
		if k == "" {
			return m, &apiError{Code: "VALIDATION_ERROR", Message: "empty header name"}
		}
		m.Headers = append(m.Headers, &pb.Header{Key: k, Value: v})
	}
	return m, nil
}

func identity(key *Key, tenant string) *auth.Identity {
	return &auth.Identity{Tenant: tenant, User: "api:" + key.Name, Role: "api"}
}

// doPublish runs one publish command.
func (s *Server) doPublish(key *Key, p *Publication) *apiError {
	if e := tenantFor(key, p.Tenant); e != nil {
		return e
	}
	if p.Subject == "" || len(p.Subjects) > 0 {
		return &apiError{Code: "VALIDATION_ERROR", Message: "publish takes one subject (broadcast takes subjects)"}
	}
	m, e := s.message(p)
	if e != nil {
		return e
	}
	results, e := publishAll(s.g, identity(key, p.Tenant), []string{p.Subject}, m, 1)
	if e != nil {
		return e
	}
	return results[0].Error
}

// publishAll checks every subject and m's size, then publishes m to each
// subject for id, in order: one result per subject. Nothing is published
// when a check fails. HTTP publish and broadcast and the NATS API share it.
func publishAll(g *gateway.Gateway, id *auth.Identity, subjects []string, m gateway.Message, maxSubjects int) ([]Result, *apiError) {
	if len(subjects) > maxSubjects {
		return nil, &apiError{Code: "VALIDATION_ERROR", Message: "more than " + strconv.Itoa(maxSubjects) + " subjects"}
	}
	for _, subj := range subjects {
		if err := router.ValidateSubject(subj); err != nil {
			return nil, &apiError{Code: "VALIDATION_ERROR", Message: "invalid subject " + strconv.Quote(subj)}
		}
	}
	if len(m.Data) > g.MaxMessageBytes() {
		return nil, &apiError{Code: "VALIDATION_ERROR", Message: "data larger than " + strconv.Itoa(g.MaxMessageBytes()) + " bytes"}
	}
	results := make([]Result, len(subjects))
	for i, subj := range subjects {
		mi := m
		mi.Subject = subj
		if err := g.Publish(id, &mi); err != nil {
			results[i].Error = fromOp(err)
		} else {
			results[i].Result = struct{}{}
		}
	}
	return results, nil
}

func (s *Server) count(method string, e *apiError) {
	result := "ok"
	if e != nil {
		result = strings.ToLower(e.Code)
	}
	s.commands.WithLabelValues(method, result).Inc()
}

// publish: POST /api/v1/publish.
func (s *Server) publish(_ context.Context, key *Key, r *http.Request) (int, any) {
	var p Publication
	if err := decode(r, &p); err != nil {
		return badRequest(err.Error())
	}
	e := s.doPublish(key, &p)
	s.count("publish", e)
	if e != nil {
		return statusOf(e.Code), e
	}
	return http.StatusOK, struct{}{}
}

// Result is one command's outcome in a broadcast or batch answer.
type Result struct {
	Result any       `json:"result,omitempty"`
	Error  *apiError `json:"error,omitempty"`
}

// doBroadcast runs one broadcast command: every subject is checked before
// any is published.
func (s *Server) doBroadcast(key *Key, p *Publication) ([]Result, *apiError) {
	if e := tenantFor(key, p.Tenant); e != nil {
		return nil, e
	}
	if p.Subject != "" || len(p.Subjects) == 0 {
		return nil, &apiError{Code: "VALIDATION_ERROR", Message: "broadcast takes subjects (publish takes one subject)"}
	}
	m, e := s.message(p)
	if e != nil {
		return nil, e
	}
	results, e := publishAll(s.g, identity(key, p.Tenant), p.Subjects, m, s.cfg.MaxCommands)
	for i := range results {
		s.count("broadcast", results[i].Error)
	}
	return results, e
}

// broadcast: POST /api/v1/broadcast.
func (s *Server) broadcast(_ context.Context, key *Key, r *http.Request) (int, any) {
	var p Publication
	if err := decode(r, &p); err != nil {
		return badRequest(err.Error())
	}
	results, e := s.doBroadcast(key, &p)
	if e != nil {
		s.count("broadcast", e)
		return statusOf(e.Code), e
	}
	return http.StatusOK, map[string][]Result{"results": results}
}

// Disconnection is the body of a disconnect.
type Disconnection struct {
	Tenant  string `json:"tenant"`
	User    string `json:"user"`
	Session string `json:"session,omitempty"`
	Code    uint16 `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func (s *Server) doDisconnect(key *Key, d *Disconnection) (any, *apiError) {
	if e := tenantFor(key, d.Tenant); e != nil {
		return nil, e
	}
	if d.User == "" && d.Session == "" {
		return nil, &apiError{Code: "VALIDATION_ERROR", Message: "user or session is required"}
	}
	if len(d.Reason) > 123 {
		return nil, &apiError{Code: "VALIDATION_ERROR", Message: "reason longer than 123 bytes"}
	}
	n, err := s.g.DisconnectEverywhere(d.Tenant, d.User, d.Session, d.Code, d.Reason)
	if errors.Is(err, gateway.ErrBadCloseCode) {
		return nil, &apiError{Code: "VALIDATION_ERROR", Message: "code must be 1000 or 3000-4999"}
	}
	if err != nil {
		return nil, fromOp(err)
	}
	return map[string]int{"disconnected_here": n}, nil
}

// disconnect: POST /api/v1/disconnect.
func (s *Server) disconnect(_ context.Context, key *Key, r *http.Request) (int, any) {
	var d Disconnection
	if err := decode(r, &d); err != nil {
		return badRequest(err.Error())
	}
	res, e := s.doDisconnect(key, &d)
	s.count("disconnect", e)
	if e != nil {
		return statusOf(e.Code), e
	}
	return http.StatusOK, res
}

// Command is one entry of a batch.
type Command struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// batch: POST /api/v1/batch: commands run in order; each gets a result or
// an error, and one failing does not stop the others.
func (s *Server) batch(_ context.Context, key *Key, r *http.Request) (int, any) {
	var b struct {
		Commands []Command `json:"commands"`
	}
	if err := decode(r, &b); err != nil {
		return badRequest(err.Error())
	}
	if len(b.Commands) == 0 || len(b.Commands) > s.cfg.MaxCommands {
		return badRequest("a batch holds 1 to " + strconv.Itoa(s.cfg.MaxCommands) + " commands")
	}
	replies := make([]Result, len(b.Commands))
	for i, c := range b.Commands {
		replies[i] = s.runCommand(key, &c)
	}
	return http.StatusOK, map[string][]Result{"replies": replies}
}

func (s *Server) runCommand(key *Key, c *Command) Result {
	strict := func(v any) *apiError {
		if err := decodeStrict(bytes.NewReader(c.Params), v); err != nil {
			return &apiError{Code: "VALIDATION_ERROR", Message: "params: " + err.Error()}
		}
		return nil
	}
	switch c.Method {
	case "publish":
		var p Publication
		e := strict(&p)
		if e == nil {
			e = s.doPublish(key, &p)
		}
		s.count("publish", e)
		if e != nil {
			return Result{Error: e}
		}
		return Result{Result: struct{}{}}
	case "broadcast":
		var p Publication
		e := strict(&p)
		var results []Result
		if e == nil {
			results, e = s.doBroadcast(key, &p)
		}
		if e != nil {
			s.count("broadcast", e)
			return Result{Error: e}
		}
		return Result{Result: map[string][]Result{"results": results}}
	case "disconnect":
		var d Disconnection
		e := strict(&d)
		var res any
		if e == nil {
			res, e = s.doDisconnect(key, &d)
		}
		s.count("disconnect", e)
		if e != nil {
			return Result{Error: e}
		}
		return Result{Result: res}
	}
	s.count("unknown", &apiError{Code: "VALIDATION_ERROR"})
	return Result{Error: &apiError{Code: "VALIDATION_ERROR", Message: "unknown method " + strconv.Quote(c.Method) + " (publish, broadcast, disconnect)"}}
}

// Member is a presence member in API answers.
type Member struct {
	User     string          `json:"user"`
	Session  string          `json:"session"`
	Node     string          `json:"node"`
	JoinedAt int64           `json:"joined_at"`
	Info     json.RawMessage `json:"info,omitempty"`
}

// PresenceAnswer is the body of a presence answer.
type PresenceAnswer struct {
	Members *[]Member `json:"members,omitempty"` // absent for count_only
	Count   int       `json:"count"`
	Users   int       `json:"users"`
	Cursor  string    `json:"cursor,omitempty"`
}

// presence: GET /api/v1/presence?tenant=&subject=[&count_only=true][&limit=][&cursor=].
func (s *Server) presence(ctx context.Context, key *Key, r *http.Request) (int, any) {
	q := r.URL.Query()
	tenant := q.Get("tenant")
	if e := tenantFor(key, tenant); e != nil {
		return statusOf(e.Code), e
	}
	o := gateway.PresenceOptions{Cursor: q.Get("cursor")}
	if v := q.Get("count_only"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badRequest("count_only must be true or false")
		}
		o.CountOnly = b
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return badRequest("limit must be 1 to 1000")
		}
		o.Limit = n
	}
	ans, err := s.g.Presence(ctx, tenant, q.Get("subject"), o)
	if err != nil {
		e := fromOp(err)
		return statusOf(e.Code), e
	}
	out := PresenceAnswer{Count: int(ans.Count), Users: int(ans.Users), Cursor: ans.Cursor}
	if !o.CountOnly {
		ms := make([]Member, len(ans.Members))
		for i, m := range ans.Members {
			ms[i] = Member{User: m.User, Session: m.Session, Node: m.Node, JoinedAt: m.JoinedAt}
			if len(m.Info) > 0 {
				ms[i].Info = json.RawMessage(m.Info)
			}
		}
		out.Members = &ms
	}
	return http.StatusOK, out
}

// ClusterInfo is the answer of info: every node that answered within
// the wait, and their sums.
type ClusterInfo struct {
	Nodes         []gateway.NodeInfo `json:"nodes"`
	Connections   int                `json:"connections"`
	Subscriptions int                `json:"subscriptions"`
}

// infoWait is how long info waits for the other nodes' answers.
const infoWait = 250 * time.Millisecond

// info: GET /api/v1/info: every node's connections and subscriptions, per
// tenant (an admin key sees every tenant, at most 1000 per node; a tenant
// key only its own), from the nodes that answer within 250 ms.
func (s *Server) info(_ context.Context, key *Key, _ *http.Request) (int, any) {
	nodes := s.g.ClusterInfo(infoWait, 1000)
	out := ClusterInfo{Nodes: nodes}
	for i := range out.Nodes {
		ni := &out.Nodes[i]
		if key.Tenant != "" {
			var own []gateway.TenantInfo
			for _, t := range ni.Tenants {
				if t.Tenant == key.Tenant {
					own = append(own, t)
				}
			}
			ni.Tenants, ni.TenantsTruncated = own, false
			ni.Connections, ni.Subscriptions = 0, 0
			for _, t := range own {
				ni.Connections += t.Connections
				ni.Subscriptions += t.Subscriptions
			}
		}
		if ni.Tenants == nil {
			ni.Tenants = []gateway.TenantInfo{}
		}
		out.Connections += ni.Connections
		out.Subscriptions += ni.Subscriptions
	}
	return http.StatusOK, out
}
