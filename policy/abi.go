package policy

import "encoding/binary"

// The policy ABI, version 1 (docs/POLICY.md is the reference).
//
// A policy module exports:
//
//	memory                             its linear memory
//	arqon_policy_abi_version() -> i32  must return ABIVersion
//	arqon_alloc(size i32) -> i32       a pointer to at least size writable bytes, 0 if none
//	arqon_decide(ptr i32, len i32) -> i64
//	arqon_needs_payload() -> i32       optional: 0 = never reads PolicyRequest.payload
//	arqon_actions() -> i32             optional: bit (1 << PolicyAction) per action it decides
//
// and may import only arqon.log(ptr i32, len i32).
//
// The host calls arqon_alloc when it needs a request buffer larger than any it
// asked this instance for before (sizes are powers of two, at least
// minRequestBuf); the region must stay reserved for the host until the next
// arqon_alloc call. It then writes a Protobuf PolicyRequest of len bytes at
// ptr and calls arqon_decide(ptr, len), whose result r is:
//
//	r == 0   allow
//	r != 0   deny: reason = uint32(r), msg = uint32(r >> 32)
//
// reason is one of the Reason* codes (0 means ReasonPolicyBlocked); msg is 0
// or a pointer to a little-endian u32 length n <= MaxMessageLen followed by n
// bytes of UTF-8 text. Anything else is a bad return value: a fail-closed
// deny.
const (
	ABIVersion = 1

	ExportMemory       = "memory"
	ExportABIVersion   = "arqon_policy_abi_version"
	ExportAlloc        = "arqon_alloc"
	ExportDecide       = "arqon_decide"
	ExportNeedsPayload = "arqon_needs_payload"
	ExportActions      = "arqon_actions"

	ImportModule = "arqon"
	ImportLog    = "log"

	// MaxMessageLen is the longest deny message a policy may return.
	MaxMessageLen = 512
	// MaxLogLen is the longest line arqon.log records; longer ones are cut.
	MaxLogLen = 1024

	// minRequestBuf is the smallest request buffer the host asks for.
	minRequestBuf = 1024
)

// Deny reason codes a policy returns in the low 32 bits of arqon_decide's
// result. They are part of the ABI and never renumbered.
const (
	ReasonDefault             = 0 // same as ReasonPolicyBlocked
	ReasonPolicyBlocked       = 1 // Code "POLICY_BLOCKED"
	ReasonAuthorizationDenied = 2 // Code "AUTHORIZATION_DENIED"
	ReasonValidationError     = 3 // Code "VALIDATION_ERROR"
	ReasonLimitExceeded       = 4 // Code "LIMIT_EXCEEDED"
	ReasonRateLimitExceeded   = 5 // Code "RATE_LIMIT_EXCEEDED"
	numDenyReasons            = 6
)

// denyCodes maps a deny reason code to Decision.Code.
var denyCodes = [numDenyReasons]string{
	ReasonDefault:             CodePolicyBlocked,
	ReasonPolicyBlocked:       CodePolicyBlocked,
	ReasonAuthorizationDenied: "AUTHORIZATION_DENIED",
	ReasonValidationError:     "VALIDATION_ERROR",
	ReasonLimitExceeded:       "LIMIT_EXCEEDED",
	ReasonRateLimitExceeded:   "RATE_LIMIT_EXCEEDED",
}

// defaultDenyMessage is the Message of a deny that carries none.
const defaultDenyMessage = "denied by policy"

// actionsAll is the action mask of a module without arqon_actions.
const actionsAll = ^uint32(0)

// decodeResult decodes a non-zero arqon_decide result r against the guest's
// memory mem. It returns the Decision code and a view of the message bytes
// inside mem (nil if none), or ok == false if r breaks the ABI.
func decodeResult(r uint64, mem []byte) (code string, msg []byte, ok bool) {
	reason := uint32(r)
	if reason >= numDenyReasons {
		return "", nil, false
	}
	ptr := uint64(r >> 32)
	if ptr == 0 {
		return denyCodes[reason], nil, true
	}
	if ptr+4 > uint64(len(mem)) {
		return "", nil, false
	}
	n := uint64(binary.LittleEndian.Uint32(mem[ptr:]))
	if n > MaxMessageLen || ptr+4+n > uint64(len(mem)) {
		return "", nil, false
	}
	return denyCodes[reason], mem[ptr+4 : ptr+4+n], true
}
