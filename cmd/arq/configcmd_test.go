package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestConfigDefault: the commented default config passes arq config check,
// and its effective settings are those of an empty file.
func TestConfigDefault(t *testing.T) {
	dir := t.TempDir()
	def := filepath.Join(dir, "default.toml")
	writeFile(t, def, defaultConfig)
	cfg, err := checkConfig(def, true)
	if err != nil {
		t.Fatalf("arq config default does not pass arq config check: %v", err)
	}
	empty := filepath.Join(dir, "empty.toml")
	writeFile(t, empty, "")
	ecfg, err := checkConfig(empty, true)
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if err := toml.NewEncoder(&a).Encode(effectiveConfig(*cfg)); err != nil {
		t.Fatal(err)
	}
	if err := toml.NewEncoder(&b).Encode(effectiveConfig(*ecfg)); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("arq config default is not the defaults:\n--- default file\n%s\n--- empty file\n%s", a.String(), b.String())
	}
}

// TestConfigDefaultCoversEveryKey keeps arq config default in step with
// Config: every key appears in its section, set or commented out.
func TestConfigDefaultCoversEveryKey(t *testing.T) {
	sectionRe := regexp.MustCompile(`^#?\s*\[\[?([a-z_.]+)\]\]?\s*(#.*)?$`)
	keyRe := regexp.MustCompile(`^#?\s*([a-z_]+)\s*=`)
	have := map[string]bool{}
	section := ""
	for _, l := range strings.Split(defaultConfig, "\n") {
		if m := sectionRe.FindStringSubmatch(l); m != nil {
			section = m[1] + "."
			continue
		}
		if m := keyRe.FindStringSubmatch(l); m != nil {
			have[section+m[1]] = true
		}
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			key := strings.Split(f.Tag.Get("toml"), ",")[0]
			if key == "" || key == "-" {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(prefix+key+".", ft)
				continue
			}
			if !have[prefix+key] {
				t.Errorf("arq config default (cmd/arq/configcmd.go) does not show %s%s", prefix, key)
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
}

// TestConfigCheck: the binary validates strictly and prints effective
// settings; bad files fail with a clear error.
func TestConfigCheck(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "arq")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	def, err := exec.Command(bin, "config", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "default.toml"), string(def))
	out, err := exec.Command(bin, "config", "check", filepath.Join(dir, "default.toml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `listen = "127.0.0.1:8080"`) || !strings.Contains(string(out), `idle_timeout = "1m0s"`) {
		t.Fatalf("arq config check (arq config default): %v\n%s", err, out)
	}
	for _, f := range []string{"../../deploy/arq.example.toml"} {
		if out, err := exec.Command(bin, "config", "check", "-q", f).CombinedOutput(); err != nil || len(out) != 0 {
			t.Errorf("%s: %v %s", f, err, out)
		}
	}
	for _, f := range []string{"../../deploy/compose/gateway.toml", "../../deploy/compose/brain.toml"} {
		if out, err := exec.Command(bin, "config", "check", "-q", "-skip-files", f).CombinedOutput(); err != nil {
			t.Errorf("%s: %v %s", f, err, out)
		}
	}
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, strings.Repeat("s", 40))
	writeFile(t, filepath.Join(dir, "inline.toml"), "[brain]\nvalkey_password = \"hunter2\"\n")
	if out, _ := exec.Command(bin, "config", "check", filepath.Join(dir, "inline.toml")).CombinedOutput(); strings.Contains(string(out), "hunter2") {
		t.Errorf("a password is printed:\n%s", out)
	}
	for name, tc := range map[string]struct{ conf, want string }{
		"unknown key":  {"[server]\nlisen = \"x\"\n", "unknown keys: server.lisen"},
		"duration":     {"[server]\nidle_timeout = \"soon\"\n", `server.idle_timeout: invalid duration "soon"`},
		"insecure":     {"[server]\nlisten = \"0.0.0.0:8080\"\n", "tls_terminated_upstream"},
		"dev secret":   {"[server]\nlisten = \"0.0.0.0:8080\"\ntls_terminated_upstream = true\n", "needs auth.secret_file"},
		"secret file":  {"[auth]\nsecret_file = \"" + filepath.Join(dir, "missing") + "\"\n", "auth.secret_file"},
		"policy":       {"[policy]\ndefault = \"maybe\"\n", "policy.default"},
		"address":      {"[server]\nadmin = \"localhost\"\n", "server.admin"},
		"heartbeat":    {"[brain]\nnode_ttl = \"2s\"\nheartbeat_interval = \"2s\"\n", "well under brain.node_ttl"},
		"nats user":    {"[nats]\nurl = \"nats://n:4222\"\npassword_file = \"" + secret + "\"\n", "needs nats.user"},
		"publish rate": {"[limits]\npublish_rate = -5.0\n", "limits.publish_rate"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".toml")
		writeFile(t, p, tc.conf)
		out, err := exec.Command(bin, "config", "check", p).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: %v, output %q, want %q", name, err, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".arqon")); err == nil {
		t.Error("arq config check created .arqon")
	}
}
