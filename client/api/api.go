// Package api is a Go client of ArqonBus's server API (docs/API.md): what
// an application backend uses to publish to clients, read presence,
// disconnect sessions and see what a node holds, over HTTP with an API
// key.
//
//	c := api.New("http://127.0.0.1:9090", os.Getenv("ARQ_API_KEY"))
//	err := c.Publish(ctx, api.Publication{Tenant: "acme", Subject: "user.alice.inbox", Data: "order shipped"})
package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls one node's server API. Safe for concurrent use; it keeps
// connections alive between calls.
type Client struct {
	base string
	key  string
	hc   *http.Client
}

// New returns a client of the API at base ("http://host:port") with key.
func New(base, key string) *Client {
	return &Client{base: strings.TrimRight(base, "/"), key: key, hc: &http.Client{}}
}

// WithHTTPClient sets the HTTP client (timeouts, TLS, transport).
func (c *Client) WithHTTPClient(hc *http.Client) *Client { c.hc = hc; return c }

// Error is an error answer of the API.
type Error struct {
	Status  int    // HTTP status
	Code    string `json:"code"` // VALIDATION_ERROR, AUTHENTICATION_FAILED, AUTHORIZATION_DENIED, POLICY_BLOCKED, UNAVAILABLE, ...
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("arqonbus api: %d %s: %s", e.Status, e.Code, e.Message)
}

// Publication is one message for Publish (Subject) or Broadcast
// (Subjects). Data is text; Binary, when set, is sent as base64 instead.
type Publication struct {
	Tenant   string            `json:"tenant"`
	Subject  string            `json:"subject,omitempty"`
	Subjects []string          `json:"subjects,omitempty"`
	Data     string            `json:"-"`
	Binary   []byte            `json:"-"`
	Headers  map[string]string `json:"headers,omitempty"`
}

// MarshalJSON writes data or data_b64.
func (p Publication) MarshalJSON() ([]byte, error) {
	type plain Publication
	out := struct {
		plain
		Data    *string `json:"data,omitempty"`
		DataB64 *string `json:"data_b64,omitempty"`
	}{plain: plain(p)}
	if p.Binary != nil {
		s := base64.StdEncoding.EncodeToString(p.Binary)
		out.DataB64 = &s
	} else {
		out.Data = &p.Data
	}
	return json.Marshal(out)
}

// Result is one command's outcome in a broadcast or batch answer.
type Result struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Command is one entry of a Batch: Method "publish", "broadcast" or
// "disconnect", and its parameters (a Publication or a Disconnection).
type Command struct {
	Method string `json:"method"`
	Params any    `json:"params"`
}

// Disconnection names the sessions to close: every session of User in
// Tenant, or only Session; Code is 1000 or 3000-4999 (0: 1000).
type Disconnection struct {
	Tenant  string `json:"tenant"`
	User    string `json:"user,omitempty"`
	Session string `json:"session,omitempty"`
	Code    uint16 `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Publish sends one message; it returns once the node has delivered it
// locally and handed it to the spine.
func (c *Client) Publish(ctx context.Context, p Publication) error {
	return c.do(ctx, "POST", "/api/v1/publish", p, nil)
}

// Broadcast sends one payload to several subjects; each gets a result.
func (c *Client) Broadcast(ctx context.Context, p Publication) ([]Result, error) {
	var out struct {
		Results []Result `json:"results"`
	}
	err := c.do(ctx, "POST", "/api/v1/broadcast", p, &out)
	return out.Results, err
}

// Batch runs commands in order in one request; each gets a result.
func (c *Client) Batch(ctx context.Context, cmds []Command) ([]Result, error) {
	var out struct {
		Replies []Result `json:"replies"`
	}
	err := c.do(ctx, "POST", "/api/v1/batch", map[string]any{"commands": cmds}, &out)
	return out.Replies, err
}

// Disconnect closes sessions on every node and returns how many the
// called node closed itself.
func (c *Client) Disconnect(ctx context.Context, d Disconnection) (int, error) {
	var out struct {
		Here int `json:"disconnected_here"`
	}
	err := c.do(ctx, "POST", "/api/v1/disconnect", d, &out)
	return out.Here, err
}

// Member is a presence member.
type Member struct {
	User     string          `json:"user"`
	Session  string          `json:"session"`
	Node     string          `json:"node"`
	JoinedAt int64           `json:"joined_at"`
	Info     json.RawMessage `json:"info,omitempty"`
}

// PresenceAnswer is a page of a room's members (nil with count only), its
// counts and the cursor of the next page ("" on the last).
type PresenceAnswer struct {
	Members []Member `json:"members"`
	Count   int      `json:"count"`
	Users   int      `json:"users"`
	Cursor  string   `json:"cursor"`
}

// Presence asks for a room's members (a page of at most limit, after
// cursor) or, with countOnly, its counts.
func (c *Client) Presence(ctx context.Context, tenant, subject string, countOnly bool, limit int, cursor string) (*PresenceAnswer, error) {
	q := url.Values{"tenant": {tenant}, "subject": {subject}}
	if countOnly {
		q.Set("count_only", "true")
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var out PresenceAnswer
	err := c.do(ctx, "GET", "/api/v1/presence?"+q.Encode(), nil, &out)
	return &out, err
}

// TenantInfo and NodeInfo describe what a node holds.
type TenantInfo struct {
	Tenant        string `json:"tenant"`
	Connections   int    `json:"connections"`
	Subscriptions int    `json:"subscriptions"`
}

// NodeInfo is the answer of Info.
type NodeInfo struct {
	Node             string       `json:"node"`
	Ready            bool         `json:"ready"`
	Connections      int          `json:"connections"`
	Subscriptions    int          `json:"subscriptions"`
	Tenants          []TenantInfo `json:"tenants"`
	TenantsTruncated bool         `json:"tenants_truncated"`
}

// ClusterInfo is the answer of Info: every node that answered, and their
// sums.
type ClusterInfo struct {
	Nodes         []NodeInfo `json:"nodes"`
	Connections   int        `json:"connections"`
	Subscriptions int        `json:"subscriptions"`
}

// Info reports every node's connections and subscriptions (the nodes that
// answer the called one within 250 ms).
func (c *Client) Info(ctx context.Context) (*ClusterInfo, error) {
	var out ClusterInfo
	err := c.do(ctx, "GET", "/api/v1/info", nil, &out)
	return &out, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "apikey "+c.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == nil {
			return &Error{Status: resp.StatusCode, Code: "HTTP", Message: strings.TrimSpace(string(raw))}
		}
		e.Error.Status = resp.StatusCode
		return e.Error
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}
