package main

// Tests of deploy/: the Prometheus rules and the Grafana dashboard query only
// metrics that arq serve and arq brain expose (scraped after real traffic,
// through deploy/nats/nats.conf's users and permissions); the compose file,
// the Dockerfile and the systemd units refer to files, images and flags that
// exist. `docker compose config` and `systemd-analyze verify` run where the
// tools exist; the Go checks always run.

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/arqonbus/arqonbus/auth"
	"github.com/arqonbus/arqonbus/client"
)

const deployDir = "../../deploy"

// natsTestEnv are the passwords deploy/nats/nats.conf reads from the
// environment (deploy/gen-secrets.sh makes real ones).
var natsTestEnv = map[string]string{
	"ARQ_NATS_GATEWAY_PASSWORD": "gw-test-password",
	"ARQ_NATS_BRAIN_PASSWORD":   "brain-test-password",
	"ARQ_NATS_SYSTEM_PASSWORD":  "sys-test-password",
	"ARQ_NATS_BACKEND_PASSWORD": "backend-test-password",
}

func setNATSEnv(t *testing.T) {
	for k, v := range natsTestEnv {
		t.Setenv(k, v)
	}
}

// metricRe finds metric names of ArqonBus, its policy engine and the Go and
// process collectors in a PromQL expression.
var metricRe = regexp.MustCompile(`\b(?:arq|arqon|process|go)_[a-zA-Z0-9_]+`)

// selectorRe finds every identifier used as a series selector (before "{"
// or "["): it must be one metricRe matches, or Prometheus's own "up".
var selectorRe = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]`)

// queriedMetrics returns the metric names in exprs (what they query), and
// fails on a selector of a metric outside the known prefixes.
func queriedMetrics(t *testing.T, where string, exprs []string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range selectorRe.FindAllStringSubmatch(e, -1) {
			name := m[1]
			if name != "up" && !metricRe.MatchString(name) && !strings.HasPrefix(name, "$") {
				t.Errorf("%s: %q selects %q, a metric arq does not name", where, e, name)
			}
		}
		for _, m := range metricRe.FindAllString(e, -1) {
			seen[m] = true
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// alertExprs returns alert name -> expression of deploy/prometheus/alerts.yml.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert  string            `yaml:"alert"`
				Record string            `yaml:"record"`
				Expr   string            `yaml:"expr"`
				For    string            `yaml:"for"`
				Labels map[string]string `yaml:"labels"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, filepath.Join(deployDir, "prometheus/alerts.yml"), &f)
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("alerts.yml: group %s: a rule without alert or expr", g.Name)
				continue
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alerts.yml: %s has no severity label", r.Alert)
			}
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// dashboardExprs returns every PromQL expression of the Grafana dashboard:
// panel targets (rows' nested panels too) and template variable queries.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana/arqonbus.json"))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr string `json:"expr"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Type    string   `json:"type"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Title      string  `json:"title"`
		UID        string  `json:"uid"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("arqonbus.json: %v", err)
	}
	if d.Title != "ArqonBus Overview" || d.UID == "" {
		t.Errorf("arqonbus.json: title %q uid %q", d.Title, d.UID)
	}
	var exprs []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && p.Type != "text" && len(p.Targets) == 0 {
				t.Errorf("arqonbus.json: panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("arqonbus.json: panel %q has an empty query", p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if json.Unmarshal(v.Query, &s) != nil {
				t.Errorf("arqonbus.json: variable %s: query neither string nor object", v.Name)
			}
			q.Query = s
		}
		exprs = append(exprs, q.Query)
	}
	return exprs
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// scrapeClient keeps its connections alive (a scrape of a server out of
// descriptors reuses one) and gives up rather than hang.
var scrapeClient = &http.Client{Timeout: 10 * time.Second}

// scrape fetches a /metrics page and returns its metric families.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := scrapeClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return fams
}

// exposed reports whether the queried name is in fams: a family of that
// name, or a histogram's (summary's) _bucket, _sum or _count series.
func exposed(fams map[string]*dto.MetricFamily, name string) bool {
	if f, ok := fams[name]; ok && len(f.GetMetric()) > 0 {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		f, ok := fams[base]
		if !ok || len(f.GetMetric()) == 0 {
			return false
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suf != "_bucket"
		}
	}
	return false
}

// natsFromConf starts one NATS server from deploy/nats/nats.conf (accounts,
// users and permissions as deployed; the cluster block dropped, a free
// port) and returns its host:port and a function returning the permission
// violations the server logged so far.
func natsFromConf(t *testing.T) (string, func() []string) {
	t.Helper()
	setNATSEnv(t)
	opts, err := natsserver.ProcessConfigFile(filepath.Join(deployDir, "nats/nats.conf"))
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPPort = 0
	opts.Cluster = natsserver.ClusterOpts{}
	opts.Routes = nil
	opts.NoSigs = true
	s, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	lg := &violationLog{}
	s.SetLoggerV2(lg, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats from nats.conf did not start")
	}
	t.Cleanup(s.Shutdown)
	return s.Addr().String(), lg.get
}

// violationLog keeps the permission violations a NATS server logs
// ("Publish Violation", "Subscription Violation").
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) log(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	if strings.Contains(s, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, s)
		l.mu.Unlock()
	}
}
func (l *violationLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}
func (l *violationLog) Noticef(f string, v ...any) { l.log(f, v...) }
func (l *violationLog) Warnf(f string, v ...any)   { l.log(f, v...) }
func (l *violationLog) Fatalf(f string, v ...any)  { l.log(f, v...) }
func (l *violationLog) Errorf(f string, v ...any)  { l.log(f, v...) }
func (l *violationLog) Debugf(f string, v ...any)  { l.log(f, v...) }
func (l *violationLog) Tracef(f string, v ...any)  { l.log(f, v...) }

// startProc runs bin with args in dir and waits until every regexp has
// matched a line of its stdout; it returns the first submatch of each.
func startProc(t *testing.T, bin, dir string, args []string, res ...*regexp.Regexp) []string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	got := make([]string, len(res))
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	deadline := time.After(30 * time.Second)
	for slices.Contains(got, "") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("arq %s exited early; output:\n%s", args[0], strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			for i, re := range res {
				if m := re.FindStringSubmatch(l); m != nil && got[i] == "" {
					got[i] = m[1]
				}
			}
		case <-deadline:
			t.Fatalf("arq %s did not report; output:\n%s", args[0], strings.Join(seen, "\n"))
		}
	}
	go func() {
		for range lines {
		}
	}()
	return got
}

// TestDeployMetricsExposed runs the compose topology on loopback: a NATS
// server from deploy/nats/nats.conf, arq serve with deploy/compose/gateway.toml
// (brain elsewhere) as the gateway user, arq brain as the brain user; it
// makes traffic that creates every labelled series the dashboard and alerts
// use, and fails if a queried metric is exposed by neither process, or if
// NATS logged a permission violation.
func TestDeployMetricsExposed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs arq")
	}
	alerts := alertExprs(t)
	var alertList []string
	for _, e := range alerts {
		alertList = append(alertList, e)
	}
	want := map[string][]string{}
	for _, m := range queriedMetrics(t, "alerts.yml", alertList) {
		want[m] = append(want[m], "alerts.yml")
	}
	for _, m := range queriedMetrics(t, "arqonbus.json", dashboardExprs(t)) {
		want[m] = append(want[m], "arqonbus.json")
	}
	if len(want) < 30 {
		t.Fatalf("only %d metrics found in the dashboard and alerts: is the extraction broken?", len(want))
	}

	natsAddr, violations := natsFromConf(t)
	bin := buildArq(t)
	dir := t.TempDir()
	secret := bytes.Repeat([]byte("k"), 40)
	secretPath := filepath.Join(dir, "hs256.secret")
	writeFile(t, secretPath, string(secret))
	gwConf, err := os.ReadFile(filepath.Join(deployDir, "compose/gateway.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for user, pw := range map[string]string{"gateway": natsTestEnv["ARQ_NATS_GATEWAY_PASSWORD"], "brain": natsTestEnv["ARQ_NATS_BRAIN_PASSWORD"]} {
		writeFile(t, filepath.Join(dir, "nats-"+user), pw)
	}
	conf := strings.Replace(string(gwConf), "/run/secrets/hs256", secretPath, 1)
	conf = strings.Replace(conf, "/run/secrets/nats-gateway", filepath.Join(dir, "nats-gateway"), 1)
	conf = strings.Replace(conf, "[server]\n", "[server]\nhandshake_timeout = \"1s\"\n", 1)
	conf += "\n[limits]\nmax_subscriptions = 3\n"
	confPath := filepath.Join(dir, "gateway.toml")
	writeFile(t, confPath, conf)
	policies, _ := filepath.Abs("../../policies")

	got := startProc(t, bin, dir, []string{"serve", "--config", confPath, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--nats", "nats://" + natsAddr, "--node-id", "gw-test", "--policy-dir", policies},
		regexp.MustCompile(`websocket: (ws://\S+)`), regexp.MustCompile(`admin:\s+(http://\S+)/metrics`))
	wsURL, serveAdmin := got[0], got[1]
	brConf, err := os.ReadFile(filepath.Join(deployDir, "compose/brain.toml"))
	if err != nil {
		t.Fatal(err)
	}
	brainConf := filepath.Join(dir, "brain.toml")
	writeFile(t, brainConf, strings.Replace(string(brConf), "/run/secrets/nats-brain", filepath.Join(dir, "nats-brain"), 1))
	got = startProc(t, bin, dir, []string{"brain", "--config", brainConf, "--nats", "nats://" + natsAddr, "--admin", "127.0.0.1:0"},
		regexp.MustCompile(`admin:\s+(http://\S+)/metrics`))
	brainAdmin := got[0]

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mint := func(user string) string {
		tok, err := auth.Mint(secret, auth.MintOptions{Tenant: "acme", User: user, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	dial := func(user string) *client.Client {
		c, err := client.Dial(ctx, client.Options{URL: wsURL, Token: mint(user)})
		if err != nil {
			t.Fatalf("dial %s: %v", user, err)
		}
		return c
	}
	// A refused upgrade (arq_handshake_failures_total{reason}).
	if _, err := client.Dial(ctx, client.Options{URL: wsURL, Token: "not-a-token"}); err == nil {
		t.Fatal("a bad token was accepted")
	}
	// A connection that never upgrades (arq_timeouts_total{kind="handshake"}).
	raw, err := net.Dial("tcp", strings.TrimPrefix(strings.TrimSuffix(wsURL, "/v1/socket"), "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	// Presence: the brain must be up before members join; wait for it to
	// hear the gateway (arq_brain_nodes).
	waitMetric(t, brainAdmin+"/metrics", "arq_brain_nodes", func(v float64) bool { return v >= 1 })
	alice, bob := dial("alice"), dial("bob")
	defer alice.Close()
	sub, err := alice.Subscribe(ctx, "chat.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SubscribePresence(ctx, "room.1", []byte(`{"name":"Alice"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SubscribePresence(ctx, "room.1", nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.PublishAck(ctx, "chat.lobby", []byte("hello"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.C:
		if string(m.Data) != "hello" {
			t.Fatalf("got %q", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	// A policy denial (30-malware: POLICY_BLOCKED) and a validation error.
	if err := bob.PublishAck(ctx, "chat.lobby", []byte("some malware here"), client.PublishOptions{}); err == nil {
		t.Fatal("the malware policy let a publish through")
	}
	if err := bob.PublishAck(ctx, "chat..bad", []byte("x"), client.PublishOptions{}); err == nil {
		t.Fatal("an invalid subject was accepted")
	}
	// A limit hit: max_subscriptions = 3 (alice holds 2).
	if _, err := alice.Subscribe(ctx, "orders.>"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Subscribe(ctx, "more.>"); err == nil {
		t.Fatal("max_subscriptions not enforced")
	}
	// A presence query (gateway and brain query counters).
	// (presence is applied by the brain asynchronously: wait for both joins).
	for i := 0; ; i++ {
		ans, err := alice.PresenceAll(ctx, "room.1")
		if err == nil && len(ans.Members) == 2 {
			break
		}
		if i == 100 {
			t.Fatalf("presence: %+v %v", ans, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A leave, seen by the gateway and the brain.
	bob.Close()
	waitMetric(t, brainAdmin+"/metrics", "arq_brain_leaves_total", func(v float64) bool { return v >= 1 })
	// Let the sweeper close the raw connection and heartbeats flow.
	time.Sleep(3 * time.Second)

	serveFams := scrape(t, serveAdmin+"/metrics")
	brainFams := scrape(t, brainAdmin+"/metrics")
	var names []string
	for m := range want {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		if !exposed(serveFams, m) && !exposed(brainFams, m) {
			t.Errorf("%s (queried by %s) is exposed by neither arq serve nor arq brain", m, strings.Join(slices.Compact(want[m]), ", "))
		}
	}
	// What both kinds of process must expose themselves (the alerts on
	// up, readiness and descriptors apply to each).
	for _, m := range []string{"arq_ready", "process_open_fds", "process_max_fds", "process_resident_memory_bytes"} {
		if !exposed(serveFams, m) || !exposed(brainFams, m) {
			t.Errorf("%s must be exposed by arq serve and arq brain", m)
		}
	}
	for _, m := range []string{"arq_brain_store_up", "arq_brain_heartbeat_lag_seconds_bucket"} {
		if !exposed(brainFams, m) {
			t.Errorf("arq brain does not expose %s", m)
		}
	}
	if v := violations(); len(v) > 0 {
		t.Errorf("NATS permission violations with deploy/nats/nats.conf:\n%s", strings.Join(v, "\n"))
	}
	if !t.Failed() {
		t.Logf("%d metrics queried by the dashboard and alerts, all exposed", len(names))
	}
}

// waitMetric polls a /metrics page until the sum of a family's samples
// satisfies ok.
func waitMetric(t *testing.T, url, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fams := scrape(t, url)
		sum := 0.0
		if f := fams[name]; f != nil {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		if ok(sum) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at %s: %v", name, url, sum)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDeployNATSPermissions: the users of deploy/nats/nats.conf can do
// only what the comments say.
func TestDeployNATSPermissions(t *testing.T) {
	addr, violations := natsFromConf(t)
	connect := func(user string) (*nats.Conn, chan error) {
		errs := make(chan error, 16)
		pw := natsTestEnv["ARQ_NATS_"+strings.ToUpper(strings.TrimSuffix(user, "-acme"))+"_PASSWORD"]
		nc, err := nats.Connect("nats://"+user+":"+pw+"@"+addr, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			errs <- err
		}))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc, errs
	}
	if _, err := nats.Connect("nats://gateway:wrong@" + addr); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if _, err := nats.Connect("nats://" + addr); err == nil {
		t.Fatal("a connection without credentials was accepted")
	}
	denied := func(nc *nats.Conn, errs chan error, pub, sub string) {
		t.Helper()
		if pub != "" {
			_ = nc.Publish(pub, []byte("x"))
		}
		if sub != "" {
			_, _ = nc.SubscribeSync(sub)
		}
		_ = nc.FlushTimeout(2 * time.Second)
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
				t.Errorf("pub %q sub %q: %v", pub, sub, err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("pub %q sub %q was allowed", pub, sub)
		}
	}
	gw, gwErrs := connect("gateway")
	for _, s := range []string{"arq.acme.chat", "arq.$brain.query", "arq.$presence.acme.room", "_INBOX.abc"} {
		if err := gw.Publish(s, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gw.SubscribeSync("arq.acme.>"); err != nil {
		t.Fatal(err)
	}
	denied(gw, gwErrs, "other.subject", "")
	denied(gw, gwErrs, "", "$SYS.>")
	denied(gw, gwErrs, "", ">")
	br, brErrs := connect("brain")
	if _, err := br.QueueSubscribe("arq.$brain.query", "brain", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	denied(br, brErrs, "arq.acme.chat", "")
	denied(br, brErrs, "", "arq.acme.>")
	// A tenant's backend: its own API requests only.
	be, beErrs := connect("backend-acme")
	if _, err := be.SubscribeSync("_INBOX.be"); err != nil {
		t.Fatal(err)
	}
	if err := be.Publish("arq.$api.acme.publish", nil); err != nil {
		t.Fatal(err)
	}
	denied(be, beErrs, "arq.acme.chat", "")
	denied(be, beErrs, "arq.$api.globex.publish", "")
	denied(be, beErrs, "", "arq.acme.>")
	if len(violations()) == 0 {
		t.Error("the server logged no violation")
	}
	// A missing password variable is an error, not an empty password.
	os.Unsetenv("ARQ_NATS_BRAIN_PASSWORD")
	if _, err := natsserver.ProcessConfigFile(filepath.Join(deployDir, "nats/nats.conf")); err == nil {
		t.Error("nats.conf loads without ARQ_NATS_BRAIN_PASSWORD")
	}
}

// arqFlags returns the flags "arq CMD --help" lists.
func arqFlags(t *testing.T, bin, cmd string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin, cmd, "--help").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 3 {
		t.Fatalf("arq %s --help lists no flags:\n%s", cmd, out)
	}
	return flags
}

// checkArgs checks that every --flag of an arq command line exists.
func checkArgs(t *testing.T, where string, args []string, flags map[string]map[string]bool) {
	t.Helper()
	if len(args) == 0 || flags[args[0]] == nil {
		t.Errorf("%s: %q is not an arq command checked here", where, args)
		return
	}
	for _, a := range args[1:] {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			if !flags[args[0]][name] {
				t.Errorf("%s: arq %s has no flag --%s", where, args[0], name)
			}
		}
	}
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       map[string]string `yaml:"build"`
	Command     []string          `yaml:"command"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Secrets     []string          `yaml:"secrets"`
	DependsOn   []string          `yaml:"depends_on"`
	Environment map[string]string `yaml:"environment"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

// TestDeployCompose checks deploy/docker-compose.yml against the tree: the
// services, the files it mounts, arq's flags, the configs (strictly
// loaded), and Prometheus's targets.
func TestDeployCompose(t *testing.T) {
	var c struct {
		Services map[string]composeService `yaml:"services"`
		Secrets  map[string]struct {
			File string `yaml:"file"`
		} `yaml:"secrets"`
	}
	readYAML(t, filepath.Join(deployDir, "docker-compose.yml"), &c)
	for _, s := range []string{"nats-1", "nats-2", "nats-3", "valkey", "gateway-1", "gateway-2", "brain", "prometheus", "grafana"} {
		if _, ok := c.Services[s]; !ok {
			t.Errorf("service %s missing", s)
		}
	}
	var bin string
	if !testing.Short() {
		bin = buildArq(t)
	} else {
		bin = filepath.Join(t.TempDir(), "arq")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	flags := map[string]map[string]bool{"serve": arqFlags(t, bin, "serve"), "brain": arqFlags(t, bin, "brain")}
	for _, cmd := range []string{"status", "token", "sub", "pub"} {
		flags[cmd] = arqFlags(t, bin, cmd)
	}
	// The README's compose walk-through uses services and flags that exist.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	execRe := regexp.MustCompile(`docker compose exec (?:-T )?(\S+) arq ([^&)\n#]+)`)
	walk := execRe.FindAllStringSubmatch(string(readme), -1)
	if len(walk) < 3 {
		t.Errorf("README: the compose section's docker compose exec lines are missing")
	}
	for _, m := range walk {
		if _, ok := c.Services[m[1]]; !ok {
			t.Errorf("README: docker compose exec %s: no such service", m[1])
		}
		checkArgs(t, "README "+m[0], strings.Fields(m[2]), flags)
	}

	mounts := func(name string, s composeService) map[string]string { // target -> host path
		m := map[string]string{}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Errorf("%s: volume %q", name, v)
				continue
			}
			if strings.HasPrefix(parts[0], ".") {
				p := filepath.Join(deployDir, parts[0])
				if _, err := os.Stat(p); err != nil {
					t.Errorf("%s: mounts %s, which does not exist", name, parts[0])
				}
				m[parts[1]] = p
			}
		}
		return m
	}
	natsURLRe := regexp.MustCompile(`^nats://(nats-\d):4222$`)
	for name, s := range c.Services {
		m := mounts(name, s)
		switch {
		case strings.HasPrefix(name, "nats-"):
			if !strings.HasPrefix(s.Image, "nats:") || m["/etc/nats/nats.conf"] == "" {
				t.Errorf("%s: image %q, nats.conf not mounted", name, s.Image)
			}
			if !slices.Contains(s.Command, name) {
				t.Errorf("%s: --name %s missing in %q", name, name, s.Command)
			}
			for k := range natsTestEnv {
				if !strings.Contains(s.Environment[k], k) {
					t.Errorf("%s: %s not passed to the server", name, k)
				}
			}
		case strings.HasPrefix(name, "gateway-"), name == "brain":
			if s.Build["dockerfile"] != "Dockerfile" || s.Build["context"] != ".." {
				t.Errorf("%s: build %v", name, s.Build)
			} else if _, err := os.Stat(filepath.Join(deployDir, "..", "Dockerfile")); err != nil {
				t.Error(err)
			}
			checkArgs(t, name, s.Command, flags)
			checkArgs(t, name+" healthcheck", s.Healthcheck.Test[2:], flags)
			var cfgPath, admin string
			for i, a := range s.Command {
				if i+1 < len(s.Command) {
					switch a {
					case "--config":
						cfgPath = s.Command[i+1]
					case "--admin":
						admin = s.Command[i+1]
					case "--nats":
						for _, u := range strings.Split(s.Command[i+1], ",") {
							mm := natsURLRe.FindStringSubmatch(u)
							if mm == nil {
								t.Errorf("%s: NATS URL %q", name, u)
								continue
							}
							if _, ok := c.Services[mm[1]]; !ok {
								t.Errorf("%s: NATS host %s is no service", name, mm[1])
							}
						}
					}
				}
			}
			if m[cfgPath] == "" {
				t.Errorf("%s: --config %q is not mounted", name, cfgPath)
				continue
			}
			cfg, err := checkConfig(m[cfgPath], false) // what arq config check -skip-files does
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if !cfg.Server.TLSTerminated {
				t.Errorf("%s: off loopback without server.tls_terminated_upstream", name)
			}
			role := map[bool]string{true: "brain", false: "gateway"}[name == "brain"]
			if cfg.NATS.User != role || cfg.NATS.PasswordFile != "/run/secrets/nats-"+role || !slices.Contains(s.Secrets, "nats-"+role) {
				t.Errorf("%s: NATS user %q password_file %q secrets %v, want user %s and its compose secret", name, cfg.NATS.User, cfg.NATS.PasswordFile, s.Secrets, role)
			}
			if name == "brain" {
				if admin != "0.0.0.0:9091" || !slices.Contains(s.Command, "valkey:6379") {
					t.Errorf("brain: admin %q, command %q", admin, s.Command)
				}
				continue
			}
			if cfg.Brain.enabled() {
				t.Errorf("%s: runs a brain in process; the brain service keeps presence", name)
			}
			if cfg.Server.Listen != "0.0.0.0:8080" || cfg.Server.Admin != "0.0.0.0:9090" {
				t.Errorf("%s: listen %q admin %q", name, cfg.Server.Listen, cfg.Server.Admin)
			}
			if cfg.Auth.SecretFile != "/run/secrets/hs256" || !slices.Contains(s.Secrets, "hs256") {
				t.Errorf("%s: secret_file %q, secrets %v", name, cfg.Auth.SecretFile, s.Secrets)
			}
			if len(s.Ports) != 1 || !strings.HasPrefix(s.Ports[0], "127.0.0.1:") || !strings.HasSuffix(s.Ports[0], ":8080") {
				t.Errorf("%s: ports %v (plain ws is published on loopback only)", name, s.Ports)
			}
			if d, err := time.ParseDuration(s.StopGracePeriod); err != nil || d <= 10*time.Second {
				t.Errorf("%s: stop_grace_period %q must exceed the 10 s drain", name, s.StopGracePeriod)
			}
		case name == "prometheus":
			if m["/etc/prometheus/prometheus.yml"] == "" || m["/etc/prometheus/alerts.yml"] == "" {
				t.Errorf("prometheus: config or rules not mounted")
			}
		case name == "grafana":
			if m["/etc/grafana/provisioning"] == "" {
				t.Errorf("grafana: provisioning not mounted")
			}
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s: port %q is published beyond loopback", name, p)
			}
		}
	}
	for name, file := range map[string]string{"hs256": "./secrets/hs256.secret", "nats-gateway": "./secrets/nats-gateway.password", "nats-brain": "./secrets/nats-brain.password"} {
		if f := c.Secrets[name].File; f != file {
			t.Errorf("secret %s from %q, want %s (deploy/gen-secrets.sh)", name, f, file)
		}
	}
	gen, err := os.ReadFile(filepath.Join(deployDir, "gen-secrets.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gen hs256.secret", "gen nats-gateway.password", "gen nats-brain.password", "ARQ_NATS_GATEWAY_PASSWORD=", "ARQ_NATS_BRAIN_PASSWORD=", "ARQ_NATS_SYSTEM_PASSWORD=", "GRAFANA_ADMIN_PASSWORD="} {
		if !strings.Contains(string(gen), want) {
			t.Errorf("gen-secrets.sh does not make %s", want)
		}
	}

	// Prometheus scrapes every arq process at its admin port.
	var p struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(deployDir, "prometheus/prometheus.yml"), &p)
	targets := map[string]string{}
	for _, sc := range p.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				targets[tg] = sc.JobName
			}
		}
	}
	for tg, job := range map[string]string{"gateway-1:9090": "arq-gateway", "gateway-2:9090": "arq-gateway", "brain:9091": "arq-brain"} {
		if targets[tg] != job {
			t.Errorf("prometheus.yml: %s scraped as %q, want job %s", tg, targets[tg], job)
		}
	}
	if !slices.Contains(p.RuleFiles, "alerts.yml") {
		t.Errorf("prometheus.yml: rule_files %v", p.RuleFiles)
	}

	// Grafana provisioning: the data source and the dashboard's path.
	var ds struct {
		Datasources []struct {
			Name, Type, URL, UID string
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(deployDir, "grafana/provisioning/datasources/prometheus.yml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana data source: %+v", ds.Datasources)
	}
	var dp struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(deployDir, "grafana/provisioning/dashboards/arqonbus.yml"), &dp)
	if len(dp.Providers) != 1 || !strings.Contains(strings.Join(c.Services["grafana"].Volumes, " "), ":"+dp.Providers[0].Options.Path+"/arqonbus.json") {
		t.Errorf("grafana dashboard provider %+v does not point at the mounted dashboard", dp.Providers)
	}

	if exec.Command("docker", "compose", "version").Run() != nil {
		t.Log("docker compose not available: skipping `docker compose config`")
		return
	}
	cmd := exec.Command("docker", "compose", "-f", filepath.Join(deployDir, "docker-compose.yml"), "config", "-q")
	cmd.Env = os.Environ()
	for k, v := range natsTestEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "GRAFANA_ADMIN_PASSWORD=test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose config: %v\n%s", err, out)
	}
}

// TestDeployDockerfile checks the Dockerfile's shape and builds the binary
// the way its build stage does: static (no ELF interpreter).
func TestDeployDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	var user, entry, buildCmd string
	copyFrom := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			user = ""
		case "USER":
			user = f[1]
		case "ENTRYPOINT":
			entry = strings.Join(f[1:], " ")
		case "RUN":
			if strings.Contains(l, "go build") {
				buildCmd = l
			}
		case "COPY":
			if strings.HasPrefix(f[1], "--from=") && strings.HasSuffix(l, "/usr/local/bin/arq") {
				copyFrom = true
			}
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:") {
		t.Errorf("not a multi-stage build from golang: %v", froms)
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final image %s: want distroless static or scratch", final)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("final stage runs as %q, want a non-root user", user)
	}
	if !copyFrom || !strings.Contains(entry, `"/usr/local/bin/arq"`) {
		t.Errorf("binary not copied from the build stage, or ENTRYPOINT %s is not arq", entry)
	}
	if !strings.Contains(buildCmd, "CGO_ENABLED=0") || !strings.Contains(buildCmd, "./cmd/arq") {
		t.Errorf("build step %q is not a static build of ./cmd/arq", buildCmd)
	}
	if testing.Short() {
		return
	}
	out := filepath.Join(t.TempDir(), "arq")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=docker-test", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, o)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the CGO_ENABLED=0 binary is dynamically linked (%v)", p.Type)
		}
	}
	if v, err := exec.Command(out, "version").Output(); err != nil || !strings.Contains(string(v), "docker-test") {
		t.Errorf("arq version: %q %v", v, err)
	}
}

// systemdUnit parses a unit file: section -> key -> values (in order).
func systemdUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string]map[string][]string{}
	sec := ""
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for i, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if l[0] == '[' && l[len(l)-1] == ']' {
			sec = l[1 : len(l)-1]
			u[sec] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || sec == "" {
			t.Fatalf("%s:%d: %q", path, i+1, l)
		}
		u[sec][strings.TrimSpace(k)] = append(u[sec][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	return u
}

// TestDeploySystemd checks the units' required keys, arq's flags in
// ExecStart, and runs systemd-analyze verify where it exists.
func TestDeploySystemd(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "arq")
	if o, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, o)
	}
	flags := map[string]map[string]bool{"serve": arqFlags(t, bin, "serve"), "brain": arqFlags(t, bin, "brain")}
	for unit, sub := range map[string]string{"arq.service": "serve", "arq-brain.service": "brain"} {
		path := filepath.Join(deployDir, "systemd", unit)
		u := systemdUnit(t, path)
		one := func(sec, key string) string {
			if v := u[sec][key]; len(v) > 0 {
				return v[len(v)-1]
			}
			t.Errorf("%s: [%s] %s missing", unit, sec, key)
			return ""
		}
		exec := strings.Fields(one("Service", "ExecStart"))
		if len(exec) < 2 || exec[0] != "/usr/local/bin/arq" || exec[1] != sub {
			t.Errorf("%s: ExecStart %q, want /usr/local/bin/arq %s ...", unit, exec, sub)
		} else {
			checkArgs(t, unit, exec[1:], flags)
		}
		for key, want := range map[string]string{
			"LimitNOFILE": "1048576", "Restart": "on-failure", "NoNewPrivileges": "yes",
			"ProtectSystem": "strict", "KillSignal": "SIGTERM", "Type": "exec",
		} {
			if got := one("Service", key); got != want {
				t.Errorf("%s: %s=%q, want %q", unit, key, got, want)
			}
		}
		stop := one("Service", "TimeoutStopSec")
		if d, err := strconv.Atoi(strings.TrimSuffix(stop, "s")); err != nil || d <= 10 {
			t.Errorf("%s: TimeoutStopSec=%q must exceed the 10 s drain", unit, stop)
		}
		if one("Service", "DynamicUser") != "yes" {
			t.Errorf("%s: not DynamicUser", unit)
		}
		if one("Install", "WantedBy") != "multi-user.target" {
			t.Errorf("%s: WantedBy", unit)
		}
		if !strings.Contains(one("Unit", "Documentation"), "OPERATIONS.md") {
			t.Errorf("%s: Documentation should name docs/OPERATIONS.md", unit)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not available: skipping systemd-analyze verify")
		return
	}
	// verify needs ExecStart's binary to exist: point it at the one built.
	dir := t.TempDir()
	var units []string
	for _, unit := range []string{"arq.service", "arq-brain.service"} {
		b, err := os.ReadFile(filepath.Join(deployDir, "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, unit)
		writeFile(t, p, strings.ReplaceAll(string(b), "/usr/local/bin/arq", bin))
		units = append(units, p)
	}
	cmd := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...)
	out, err := cmd.CombinedOutput()
	// Outside a booted systemd (a container), verify can fail for reasons
	// that are not the units'; only lines that name our units count.
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "arq.service") || strings.Contains(l, "arq-brain.service") {
			ours = append(ours, l)
		}
	}
	if len(ours) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(ours, "\n"))
	} else {
		t.Logf("systemd-analyze verify: no complaint about the units (exit %v)", err)
	}
}
