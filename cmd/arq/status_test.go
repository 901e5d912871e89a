package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A node that answers 503 on /readyz is reported not ready (exit status 1),
// with the counters of its metrics summed over their labels.
func TestStatusNotReady(t *testing.T) {
	metrics := `# TYPE arq_node_info gauge
arq_node_info{node_id="gw-7",version="v1.2"} 1
# TYPE arq_connections gauge
arq_connections 3
# TYPE arq_timeouts_total counter
arq_timeouts_total{kind="idle"} 2
arq_timeouts_total{kind="token"} 1
# TYPE arq_spine_connected gauge
arq_spine_connected 0
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		case "/metrics":
			w.Write([]byte(metrics))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	st, err := fetchStatus(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready || st.NodeID != "gw-7" || st.Version != "v1.2" || st.Connections != 3 || st.SpineConnected {
		t.Fatalf("status %+v", st)
	}
	if st.Timeouts["idle"] != 2 || st.Timeouts["token"] != 1 {
		t.Fatalf("timeouts %v", st.Timeouts)
	}
	var out bytes.Buffer
	printStatus(&out, st)
	for _, want := range []string{"arq node gw-7 at " + addr + ": NOT READY (not ready)", "spine (NATS)   disconnected", "timeouts       idle 2, token 1"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
	err = runStatus([]string{"--admin", addr, "--json"})
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("runStatus: %v, want exit status 1", err)
	}
}
