package router

import (
	"errors"
	"unicode/utf8"
)

// Limits on subjects and patterns.
const (
	// MaxSubjectLen is the longest subject or pattern, in bytes.
	MaxSubjectLen = 256
	// MaxTokens is the most dot-separated tokens a subject or pattern may have.
	MaxTokens = 16
)

// Sentinel errors. Validation reports exactly one of them; when a subject has
// several faults the first of this precedence wins: ErrEmptySubject,
// ErrSubjectTooLong, ErrInvalidChar, ErrEmptyToken, ErrTooManyTokens, then the
// leftmost wildcard fault (ErrWildcardInPublish or ErrBadWildcard).
var (
	// ErrEmptySubject is returned for the empty subject or pattern.
	ErrEmptySubject = errors.New("router: empty subject")
	// ErrSubjectTooLong is returned when a subject exceeds MaxSubjectLen bytes.
	ErrSubjectTooLong = errors.New("router: subject too long")
	// ErrTooManyTokens is returned when a subject has more than MaxTokens tokens.
	ErrTooManyTokens = errors.New("router: too many tokens")
	// ErrEmptyToken is returned for "a..b", ".a" and "a.".
	ErrEmptyToken = errors.New("router: empty token")
	// ErrInvalidChar is returned for a byte <= 0x20 (space and control
	// characters), 0x7f, or invalid UTF-8.
	ErrInvalidChar = errors.New("router: invalid character")
	// ErrWildcardInPublish is returned when a publish subject has a "*" or ">" token.
	ErrWildcardInPublish = errors.New("router: wildcard in publish subject")
	// ErrBadWildcard is returned when '*' or '>' is part of a longer token
	// ("a*", "b>c"), or when a ">" token is not the last token of a pattern.
	ErrBadWildcard = errors.New("router: bad wildcard")
	// ErrEmptyTenant is returned for the empty tenant.
	ErrEmptyTenant = errors.New("router: empty tenant")
	// ErrNotFound is returned by Remove for a subscription that is not there.
	ErrNotFound = errors.New("router: subscription not found")
	// ErrExists is returned by Insert for a (tenant, pattern, value) that is
	// already there.
	ErrExists = errors.New("router: subscription exists")
)

// ValidateSubject checks a literal publish subject: non-empty, at most
// MaxSubjectLen bytes and MaxTokens tokens, no empty token, only printable
// UTF-8 (no byte <= 0x20, no 0x7f), and no '*' or '>' anywhere (a "*" or ">"
// token is ErrWildcardInPublish; '*' or '>' inside a longer token is
// ErrBadWildcard, because no pattern could name it). It does not allocate.
func ValidateSubject(subject string) error { return validate(subject, false) }

// ValidatePattern checks a subscription pattern: the rules of ValidateSubject,
// except that a token may be "*" (exactly one token) and the last token may be
// ">" (one or more tokens). It does not allocate.
func ValidatePattern(pattern string) error { return validate(pattern, true) }

// validate checks s in one pass; wild allows wildcard tokens.
func validate(s string, wild bool) error {
	n := len(s)
	if n == 0 {
		return ErrEmptySubject
	}
	if n > MaxSubjectLen {
		return ErrSubjectTooLong
	}
	var (
		ntok     = 1
		start    = 0     // first byte of the current token
		hasWild  = false // current token holds '*' or '>'
		emptyTok = false
		wildErr  error
	)
	for i := 0; i < n; i++ {
		c := s[i]
		switch {
		case c <= ' ' || c == 0x7f:
			return ErrInvalidChar
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size <= 1 {
				return ErrInvalidChar
			}
			i += size - 1
		case c == '*' || c == '>':
			hasWild = true
		case c == '.':
			if i == start {
				emptyTok = true
			} else if hasWild && wildErr == nil {
				wildErr = wildcardError(s[start:i], wild, false)
			}
			ntok++
			start = i + 1
			hasWild = false
		}
	}
	if start == n {
		emptyTok = true
	} else if hasWild && wildErr == nil {
		wildErr = wildcardError(s[start:], wild, true)
	}
	switch {
	case emptyTok:
		return ErrEmptyToken
	case ntok > MaxTokens:
		return ErrTooManyTokens
	}
	return wildErr
}

// wildcardError judges a token that contains '*' or '>'.
func wildcardError(tok string, wild, last bool) error {
	if len(tok) != 1 {
		return ErrBadWildcard
	}
	if !wild {
		return ErrWildcardInPublish
	}
	if tok[0] == '>' && !last {
		return ErrBadWildcard
	}
	return nil
}
