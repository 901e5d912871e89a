package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/gateway"
)

func TestAdminPage(t *testing.T) {
	v, err := auth.NewVerifier([]byte("0123456789abcdef0123456789abcdef-admin-page"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	gw, err := gateway.New(gateway.Config{Listen: "127.0.0.1:0", NodeID: "node-admin", Verifier: v, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, token := range []string{"", "s3cret"} {
		mux := adminMux(reg, func() (bool, string) { return false, "presence store unavailable" })
		addAdminPage(mux, adminPageConfig{gw: gw, reg: reg, ready: func() (bool, string) { return false, "presence store unavailable" },
			brain: "in process, memory", token: token, started: time.Now()})
		srv := httptest.NewServer(mux)
		get := func(path, auth string) (int, string, string) {
			req, _ := http.NewRequest("GET", srv.URL+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", "Bearer "+auth)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return res.StatusCode, res.Header.Get("Content-Type"), string(b)
		}
		if st, ct, body := get("/", ""); st != 200 || ct != "text/html; charset=utf-8" || !strings.Contains(body, "/admin/app.js") {
			t.Errorf("GET /: %d %s", st, ct)
		}
		if st, ct, _ := get("/admin/app.js", ""); st != 200 || ct != "text/javascript; charset=utf-8" {
			t.Errorf("GET /admin/app.js: %d %s", st, ct)
		}
		if st, _, _ := get("/admin/nope.txt", ""); st != 404 {
			t.Errorf("GET /admin/nope.txt: %d", st)
		}
		if st, _, _ := get("/metrics", ""); st != 200 {
			t.Errorf("GET /metrics: %d (stays open)", st)
		}
		if token != "" {
			if st, _, _ := get("/admin/api/status", ""); st != 401 {
				t.Errorf("status without the admin token: %d", st)
			}
			if st, _, _ := get("/admin/api/status", "wrong"); st != 401 {
				t.Errorf("status with a wrong token: %d", st)
			}
		}
		st, _, body := get("/admin/api/status", token)
		if st != 200 {
			t.Fatalf("status: %d %s", st, body)
		}
		var s adminStatus
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatal(err)
		}
		if s.Node != "node-admin" || s.Ready || s.NotReady != "presence store unavailable" || s.Brain != "in process, memory" {
			t.Errorf("status: %+v", s)
		}
		if _, ok := s.Counters["messages_in_total"]; !ok {
			t.Errorf("status counters lack messages_in_total: %v", s.Counters)
		}
		srv.Close()
	}
}
