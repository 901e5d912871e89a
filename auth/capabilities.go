package auth

import (
	"errors"
	"strings"

	"github.com/arqonbus/arqonbus/router"
)

// Capabilities: the permissions a token carries in its capabilities claim,
// each "ACTION:PATTERN" with a subject pattern in the router's syntax:
//
//	sub:PATTERN       subscribe to patterns covered by PATTERN
//	pub:PATTERN       publish to subjects matched by PATTERN
//	presence:PATTERN  join (with a sub: capability too) and query the
//	                  presence of rooms matched by PATTERN
//
// Entries with another action (no "sub:", "pub:" or "presence:" prefix) are
// not ours and are ignored here (policies still see them). An entry with
// one of our actions and an invalid pattern makes the whole list invalid
// (ErrBadCapabilities).
//
// "Covered": a subscription pattern P is allowed when every subject P can
// match is matched by some sub: pattern, across all of them together. So
// sub:chat.> covers chat.*.msg and chat.>; sub:chat.* does not cover
// chat.> (chat.a.b escapes it), but sub:chat.* and sub:chat.*.> together
// do. Coverage is decided over subjects of any length, so a set that only
// covers every length up to the router's token limit one by one is not
// taken to cover ">" (a refusal, never a grant, on that edge).

// ErrBadCapabilities: a capability of ours with an invalid pattern, or
// too many capabilities.
var ErrBadCapabilities = errors.New("auth: invalid capabilities")

// MaxCapabilities bounds the capabilities of one token.
const MaxCapabilities = 256

// Grants are compiled capabilities. A nil *Grants allows everything (a
// token without the claim); a non-nil one allows exactly what it lists.
// Read-only after CompileCapabilities: safe for concurrent use.
type Grants struct {
	sub, pub, presence []capPattern
}

// capPattern is a pattern split into tokens.
type capPattern []string

// CompileCapabilities compiles a capabilities claim. A nil list (no claim)
// gives nil Grants (everything allowed) unless require is set; a non-nil
// list, even empty, gives Grants that allow only what it lists.
func CompileCapabilities(list []string, require bool) (*Grants, error) {
	if list == nil && !require {
		return nil, nil
	}
	if len(list) > MaxCapabilities {
		return nil, ErrBadCapabilities
	}
	g := &Grants{}
	for _, c := range list {
		action, pattern, ok := strings.Cut(c, ":")
		if !ok {
			continue
		}
		var dst *[]capPattern
		switch action {
		case "sub":
			dst = &g.sub
		case "pub":
			dst = &g.pub
		case "presence":
			dst = &g.presence
		default:
			continue
		}
		if router.ValidatePattern(pattern) != nil {
			return nil, ErrBadCapabilities
		}
		*dst = append(*dst, strings.Split(pattern, "."))
	}
	return g, nil
}

// CanSubscribe reports whether pattern (valid) is covered by the sub:
// capabilities.
func (g *Grants) CanSubscribe(pattern string) bool { return g == nil || covers(g.sub, pattern, "") }

// CanPublish reports whether subject (valid, literal) is matched by a pub:
// capability. It does not allocate.
func (g *Grants) CanPublish(subject string) bool { return g == nil || covers(g.pub, subject, "") }

// CanPresence reports whether room (valid, literal) is matched by a
// presence: capability: joining (with CanSubscribe) and querying it.
func (g *Grants) CanPresence(room string) bool { return g == nil || covers(g.presence, room, "") }

// SubscribeNames reports whether pattern is covered by the sub:
// capabilities whose first token is literally first (an explicit grant of
// the subjects under first, e.g. other users' personal subjects). False
// for nil Grants.
func (g *Grants) SubscribeNames(pattern, first string) bool {
	return g != nil && covers(g.sub, pattern, first)
}

// covers reports whether every subject pattern s (valid) can match is
// matched by one of caps; with first != "", only caps whose first token is
// first count.
//
// Each cap is compared with s token by token. Since a token can be almost
// anything, a "*" of s (any token) is covered at that position only by a
// "*" of the cap (or a ">" before it): a literal covers one token of
// infinitely many. A ">" of the cap swallows the rest of s. If s ends in
// ">" (one or more further tokens), a cap whose rest is "*"^m covers
// exactly m more tokens, "*"^m then ">" m+1 or more; s is covered if
// these lengths together cover 1, 2, 3, ... (one cap alone need not).
// Caps have at most router.MaxTokens tokens, so the lengths fit a word.
func covers(caps []capPattern, s string, first string) bool {
	var exact uint64 // bit m: some cap covers exactly m more tokens
	open := -1       // least m such that a cap covers m or more tokens
	for _, c := range caps {
		if first != "" && c[0] != first {
			continue
		}
		kind, m := coverOne(c, s)
		switch kind {
		case coverAll:
			return true
		case coverExact:
			exact |= 1 << m
		case coverOpen:
			if open < 0 || m < open {
				open = m
			}
		}
	}
	if open < 0 {
		return false
	}
	for k := 1; k < open; k++ {
		if exact&(1<<k) == 0 {
			return false
		}
	}
	return true
}

const (
	coverNone = iota
	coverAll
	coverExact // s's final ">" is covered for exactly m tokens
	coverOpen  // s's final ">" is covered for m or more tokens
)

// coverOne compares one cap with s.
func coverOne(c capPattern, s string) (kind, m int) {
	i := 0
	for {
		tok, rest, more := strings.Cut(s, ".")
		if i == len(c) {
			return coverNone, 0 // s is longer than the cap
		}
		ct := c[i]
		if ct == ">" {
			return coverAll, 0 // s has one or more tokens left
		}
		if tok == ">" {
			// The cap's rest must be "*"s, perhaps ending in ">".
			n := 0
			for _, t := range c[i:] {
				switch t {
				case "*":
					n++
				case ">":
					return coverOpen, n + 1
				default:
					return coverNone, 0
				}
			}
			return coverExact, n
		}
		if ct != "*" && (tok == "*" || ct != tok) {
			return coverNone, 0
		}
		i++
		if !more {
			if i == len(c) {
				return coverAll, 0
			}
			return coverNone, 0 // the cap needs more tokens
		}
		s = rest
	}
}
