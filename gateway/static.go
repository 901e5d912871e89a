package gateway

import (
	"bytes"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/pool"
)

// Plain HTTP on the WebSocket listener: a request without an Upgrade header
// gets one bounded response and the connection is closed (no keep-alive):
//
//   - GET /v1/socket: the token's verdict without an upgrade, 401 as at the
//     upgrade or 426 for a good token, so a browser client whose WebSocket
//     open failed can tell a refused token from a network error;
//   - with Config.DemoFS: GET / (index.html) and /demo/<file>;
//   - with Config.DemoToken: GET /demo/token?user=NAME;
//   - anything else: 404 as before (405 for other methods).

// maxStaticBytes bounds one static file.
const maxStaticBytes = 1 << 20

// isUpgradeRequest reports whether an HTTP request head has an Upgrade
// header (without allocating).
func isUpgradeRequest(req []byte) bool {
	line := 0
	for {
		i := bytes.Index(req, []byte("\r\n"))
		if i < 0 {
			return false
		}
		if line > 0 && i > 8 && strings.EqualFold(string(req[:8]), "upgrade:") {
			return true
		}
		if i == 0 {
			return false
		}
		req = req[i+2:]
		line++
	}
}

// serveHTTP answers a non-upgrade request (see above) and closes.
func (c *conn) serveHTTP(req []byte) {
	first, rest, _ := bytes.Cut(req, []byte("\r\n"))
	parts := strings.Fields(string(first))
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") {
		c.httpReply(http.StatusBadRequest, "text/plain; charset=utf-8", nil, []byte("bad request"), false)
		return
	}
	head := parts[0] == http.MethodHead
	if parts[0] != http.MethodGet && !head {
		c.httpReply(http.StatusMethodNotAllowed, "text/plain; charset=utf-8", nil, []byte("method not allowed"), head)
		return
	}
	p, rawQuery, _ := strings.Cut(parts[1], "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		c.httpReply(http.StatusBadRequest, "text/plain; charset=utf-8", nil, []byte("bad query"), head)
		return
	}
	g := c.g
	switch {
	case p == SocketPath:
		c.probeToken(q.Get("token"), bearer(rest), head)
	case g.cfg.DemoToken != nil && p == "/demo/token":
		c.demoToken(q.Get("user"), head)
	case g.cfg.DemoFS != nil && (p == "/" || p == "/index.html"):
		c.serveFile("index.html", head)
	case g.cfg.DemoFS != nil && strings.HasPrefix(p, "/demo/"):
		c.serveFile(strings.TrimPrefix(p, "/demo/"), head)
	default:
		c.httpReply(http.StatusNotFound, "text/plain; charset=utf-8", nil, []byte("not found"), head)
	}
}

// bearer returns the token of an "Authorization: Bearer" header, or "".
func bearer(headers []byte) string {
	for len(headers) > 0 {
		line, next, _ := bytes.Cut(headers, []byte("\r\n"))
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(k), "Authorization") {
			v = bytes.TrimSpace(v)
			if len(v) > 7 && strings.EqualFold(string(v[:7]), "Bearer ") {
				return strings.TrimSpace(string(v[7:]))
			}
		}
		headers = next
	}
	return ""
}

func (c *conn) probeToken(query, hdr string, head bool) {
	tok := hdr
	if tok == "" {
		tok = query
	}
	cors := []string{"Access-Control-Allow-Origin: *"}
	if _, err := c.g.cfg.Verifier.Verify(tok); err != nil {
		h := `WWW-Authenticate: Bearer realm="arqonbus", error="invalid_token"`
		if errors.Is(err, auth.ErrMissingToken) {
			h = `WWW-Authenticate: Bearer realm="arqonbus"`
		}
		c.httpReply(http.StatusUnauthorized, "text/plain; charset=utf-8", append(cors, h),
			[]byte(strings.TrimPrefix(err.Error(), "auth: ")), head)
		return
	}
	c.httpReply(http.StatusUpgradeRequired, "text/plain; charset=utf-8", append(cors, "Upgrade: websocket"),
		[]byte("websocket upgrade required"), head)
}

func validDemoUser(u string) bool {
	if u == "" || len(u) > 32 {
		return false
	}
	for _, r := range u {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *conn) demoToken(user string, head bool) {
	if !validDemoUser(user) {
		c.httpReply(http.StatusBadRequest, "text/plain; charset=utf-8", nil, []byte("user must be 1-32 of A-Z a-z 0-9 - _"), head)
		return
	}
	tok, err := c.g.cfg.DemoToken(user)
	if err != nil {
		c.httpReply(http.StatusInternalServerError, "text/plain; charset=utf-8", nil, []byte("cannot mint a token"), head)
		return
	}
	c.httpReply(http.StatusOK, "application/json", []string{"Cache-Control: no-store"},
		[]byte(`{"token":"`+tok+`"}`), head)
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".png":  "image/png",
	".ico":  "image/x-icon",
}

func (c *conn) serveFile(name string, head bool) {
	ct, known := contentTypes[path.Ext(name)]
	if !known || !fs.ValidPath(name) {
		c.httpReply(http.StatusNotFound, "text/plain; charset=utf-8", nil, []byte("not found"), head)
		return
	}
	f, err := c.g.cfg.DemoFS.Open(name)
	if err != nil {
		c.httpReply(http.StatusNotFound, "text/plain; charset=utf-8", nil, []byte("not found"), head)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() || st.Size() > maxStaticBytes {
		c.httpReply(http.StatusNotFound, "text/plain; charset=utf-8", nil, []byte("not found"), head)
		return
	}
	body := make([]byte, st.Size())
	if _, err := readFull(f, body); err != nil {
		c.httpReply(http.StatusInternalServerError, "text/plain; charset=utf-8", nil, []byte("read error"), head)
		return
	}
	c.httpReply(http.StatusOK, ct, []string{
		"Cache-Control: no-cache",
		"Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'",
	}, body, head)
}

func readFull(f fs.File, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil {
			if n == len(b) {
				break
			}
			return n, err
		}
	}
	return n, nil
}

// httpReply queues one HTTP/1.1 response and closes the connection.
func (c *conn) httpReply(status int, ctype string, headers []string, body []byte, head bool) {
	var b strings.Builder
	b.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n")
	b.WriteString("Content-Type: " + ctype + "\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	b.WriteString("X-Content-Type-Options: nosniff\r\nConnection: close\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if !head {
		b.Write(body)
	}
	buf := pool.Get(b.Len())
	copy(buf.B, b.String())
	c.state.Store(stateClosing)
	c.enqueueAndClose(buf)
}
