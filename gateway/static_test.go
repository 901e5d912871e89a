package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/arqonbus/arqonbus/client"
)

func httpGet(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, res.Header, string(b)
}

func TestStaticDemo(t *testing.T) {
	fsys := fstest.MapFS{
		"index.html":      {Data: []byte("<h1>demo</h1>")},
		"app.js":          {Data: []byte("console.log(1)")},
		"client/index.js": {Data: []byte("export {}")},
		"secret.txt":      {Data: []byte("no")},
	}
	n := startNode(t, nil, func(c *Config) {
		c.DemoFS = fsys
		c.DemoToken = func(user string) (string, error) { return "tok-" + user, nil }
	})
	base := "http://" + n.addr()
	for _, tc := range []struct {
		path, ctype, body string
		status            int
	}{
		{"/", "text/html; charset=utf-8", "<h1>demo</h1>", 200},
		{"/index.html", "text/html; charset=utf-8", "<h1>demo</h1>", 200},
		{"/demo/app.js", "text/javascript; charset=utf-8", "console.log(1)", 200},
		{"/demo/client/index.js", "text/javascript; charset=utf-8", "export {}", 200},
		{"/demo/secret.txt", "", "not found", 404}, // unknown type
		{"/demo/../index.html", "", "not found", 404},
		{"/demo/nope.js", "", "not found", 404},
		{"/other", "", "not found", 404},
		{"/demo/token?user=ann", "application/json", `{"token":"tok-ann"}`, 200},
		{"/demo/token?user=a%20b", "", "user must be 1-32 of A-Z a-z 0-9 - _", 400},
	} {
		st, h, body := httpGet(t, base+tc.path)
		if st != tc.status || body != tc.body || (tc.ctype != "" && h.Get("Content-Type") != tc.ctype) {
			t.Errorf("GET %s: %d %q %q, want %d %q %q", tc.path, st, h.Get("Content-Type"), body, tc.status, tc.ctype, tc.body)
		}
	}
	// the listener still upgrades
	c := dial(t, n, "t1", "u1", client.JSON)
	c.Close()
}

func TestStaticOffAndSocketProbe(t *testing.T) {
	n := startNode(t, nil, nil)
	base := "http://" + n.addr()
	if st, _, body := httpGet(t, base+"/"); st != 404 || body != "not found" {
		t.Errorf("GET / with the demo off: %d %q", st, body)
	}
	if st, _, _ := httpGet(t, base+"/demo/token?user=x"); st != 404 {
		t.Errorf("GET /demo/token with the demo off: %d", st)
	}
	st, h, body := httpGet(t, base+SocketPath+"?token=bad")
	if st != 401 || body != "malformed token" || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || h.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("probe with a bad token: %d %q %v", st, body, h)
	}
	if st, _, body := httpGet(t, base+SocketPath); st != 401 || body != "missing token" {
		t.Errorf("probe without a token: %d %q", st, body)
	}
	if st, _, _ := httpGet(t, base+SocketPath+"?token="+token(t, "t1", "u1")); st != http.StatusUpgradeRequired {
		t.Errorf("probe with a good token: %d", st)
	}
	res, err := http.Post(base+"/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 405 {
		t.Errorf("POST /: %d", res.StatusCode)
	}
}
