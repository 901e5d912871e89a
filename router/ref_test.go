package router

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// refMatch is the reference matcher: does pattern match the literal subject?
func refMatch(pattern, subject string) bool {
	p := strings.Split(pattern, ".")
	s := strings.Split(subject, ".")
	for i, t := range p {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) {
			return false
		}
		if t != "*" && t != s[i] {
			return false
		}
	}
	return len(p) == len(s)
}

// refValidate is the reference validator, written independently of validate:
// it checks each rule over the whole string in precedence order.
func refValidate(s string, wild bool) error {
	if s == "" {
		return ErrEmptySubject
	}
	if len(s) > MaxSubjectLen {
		return ErrSubjectTooLong
	}
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return ErrInvalidChar
	}
	toks := strings.Split(s, ".")
	if slices.Contains(toks, "") {
		return ErrEmptyToken
	}
	if len(toks) > MaxTokens {
		return ErrTooManyTokens
	}
	for i, t := range toks {
		if !strings.ContainsAny(t, "*>") {
			continue
		}
		switch {
		case t != "*" && t != ">":
			return ErrBadWildcard
		case !wild:
			return ErrWildcardInPublish
		case t == ">" && i != len(toks)-1:
			return ErrBadWildcard
		}
	}
	return nil
}

// refRouter is the reference router: a flat list of subscriptions.
type refRouter struct {
	subs []refSub
}

type refSub struct {
	tenant, pattern string
	v               int
}

func (r *refRouter) insert(tenant, pattern string, v int) {
	r.subs = append(r.subs, refSub{tenant, pattern, v})
}

func (r *refRouter) remove(tenant, pattern string, v int) {
	for i, s := range r.subs {
		if s == (refSub{tenant, pattern, v}) {
			r.subs = slices.Delete(r.subs, i, i+1)
			return
		}
	}
}

func (r *refRouter) match(tenant, subject string) []int {
	var out []int
	for _, s := range r.subs {
		if s.tenant == tenant && refMatch(s.pattern, subject) {
			out = append(out, s.v)
		}
	}
	slices.Sort(out)
	return out
}

// sorted returns a sorted copy of a Match result.
func sorted(vs []int) []int {
	out := slices.Clone(vs)
	slices.Sort(out)
	return out
}
