package gateway

import (
	"errors"
	"net/url"
	"strings"
)

// Browser origins. With Config.AllowedOrigins set, an upgrade whose Origin
// header matches none of the patterns gets 403 "origin not allowed" before
// its token is looked at (arq_handshake_failures_total{reason="origin"}):
// a page on another site cannot ride on a victim's token-bearing URL or
// cookies. Browsers always send Origin on a WebSocket upgrade; programs
// (the CLI, backends, k6) usually send none, and an upgrade without Origin
// is not refused (it cannot come from a page). Empty AllowedOrigins accepts
// every origin, as before.
//
// Patterns: "*" (any origin), an exact origin "https://app.example.com"
// (scheme, host and a port if not the default, no path), a subdomain
// wildcard "https://*.example.com" (one or more labels before
// .example.com, not example.com itself), or "null" (sandboxed frames and
// file: pages send it; list it only on purpose). Case does not matter.

// errBadOrigin: a pattern that is not one of the forms above.
var errBadOrigin = errors.New("gateway: allowed origin must be *, null, or scheme://host[:port] with an optional *. before the host")

// originPattern is one compiled pattern: the origin matches if it has
// prefix and suffix and, with wild, one or more host labels between them.
type originPattern struct {
	prefix, suffix string
	wild, any      bool
}

func compileOrigins(list []string) ([]originPattern, error) {
	out := make([]originPattern, 0, len(list))
	for _, p := range list {
		p = strings.ToLower(strings.TrimSpace(p))
		switch p {
		case "*":
			out = append(out, originPattern{any: true})
			continue
		case "null":
			out = append(out, originPattern{prefix: "null"})
			continue
		}
		scheme, rest, ok := strings.Cut(p, "://")
		if !ok || scheme == "" || rest == "" || strings.ContainsAny(rest, "/?#@ ") {
			return nil, errBadOrigin
		}
		wild := strings.HasPrefix(rest, "*.")
		host := strings.TrimPrefix(rest, "*.")
		if strings.Contains(host, "*") {
			return nil, errBadOrigin
		}
		if u, err := url.Parse(scheme + "://" + host); err != nil || u.Host != host || u.Hostname() == "" {
			return nil, errBadOrigin
		}
		if wild {
			out = append(out, originPattern{prefix: scheme + "://", suffix: "." + host, wild: true})
		} else {
			out = append(out, originPattern{prefix: p})
		}
	}
	return out, nil
}

// originAllowed reports whether origin (the header's value) matches one
// of pats.
func originAllowed(pats []originPattern, origin string) bool {
	o := strings.ToLower(strings.TrimSpace(origin))
	for _, p := range pats {
		switch {
		case p.any:
			return true
		case !p.wild:
			if o == p.prefix {
				return true
			}
		case len(o) > len(p.prefix)+len(p.suffix) && strings.HasPrefix(o, p.prefix) && strings.HasSuffix(o, p.suffix):
			labels := o[len(p.prefix) : len(o)-len(p.suffix)]
			if hostLabels(labels) {
				return true
			}
		}
	}
	return false
}

// hostLabels reports whether s is dot-separated non-empty labels of
// letters, digits and '-'.
func hostLabels(s string) bool {
	for _, l := range strings.Split(s, ".") {
		if l == "" {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
