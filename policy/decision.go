package policy

import (
	"errors"
	"fmt"

	"github.com/arqonbus/arqonbus/pb"
)

// Decision is the outcome of one policy check.
type Decision struct {
	// Allow is true when every policy of the chain allowed the request (or
	// none applied and the default is AllowAll).
	Allow bool
	// Code classifies a deny: a policy's reason code ("POLICY_BLOCKED",
	// "AUTHORIZATION_DENIED", ...), CodePolicyError for a fail-closed deny.
	// Empty when Allow is true.
	Code string
	// Message is a short human reason; empty when Allow is true.
	Message string
	// Policy names the module that denied ("30-malware.wasm",
	// "tenants/acme/10-acl.wasm"); empty for allows and default denies.
	Policy string
	// Reason is the fail-closed reason ("timeout", "trap", ...) when Code is
	// CodePolicyError, as counted in arqon_policy_fail_closed_total.
	Reason string
}

// Decision codes that are not chosen by a policy.
const (
	// CodePolicyBlocked is the code of a policy deny without a more specific
	// reason, and of a default deny.
	CodePolicyBlocked = "POLICY_BLOCKED"
	// CodePolicyError is the code of a fail-closed deny: the policy could not
	// give an answer (trap, timeout, bad module, ...).
	CodePolicyError = "POLICY_ERROR"
)

// ErrorCode maps d.Code to the code of the ERROR frame a client should get:
// the policy's own code when the protocol has it, POLICY_BLOCKED otherwise
// (including fail-closed denies, whose details are for operators, not
// clients). It returns ERROR_CODE_UNSPECIFIED for an allow.
func (d Decision) ErrorCode() pb.ErrorCode {
	if d.Allow {
		return pb.ErrorCode_ERROR_CODE_UNSPECIFIED
	}
	if v, ok := pb.ErrorCode_value["ERROR_CODE_"+d.Code]; ok && d.Code != CodePolicyError {
		return pb.ErrorCode(v)
	}
	return pb.ErrorCode_ERROR_CODE_POLICY_BLOCKED
}

var (
	decisionAllow       = Decision{Allow: true}
	decisionDefaultDeny = Decision{Code: CodePolicyBlocked, Message: "no policy allows this request (default deny)"}
)

// ErrClosed is returned by Reload after Close.
var ErrClosed = errors.New("policy: engine closed")

// failReason is why a call failed closed; it is the "reason" label of
// arqon_policy_fail_closed_total.
type failReason uint8

const (
	reasonNone failReason = iota
	// At decision time.
	reasonTrap        // the guest trapped (unreachable, out-of-bounds access, ...)
	reasonTimeout     // the call ran past Config.Timeout
	reasonMemoryLimit // the guest tried to grow memory past MaxMemoryPages
	reasonBadReturn   // arqon_decide returned a value the ABI does not define
	reasonAlloc       // arqon_alloc failed or returned an unusable region
	reasonCanceled    // the caller's context was done
	reasonClosed      // the engine is closed
	reasonBadRequest  // the request has no valid action
	// At load time (and at decision time for a policy that failed to load).
	reasonCompile       // not a valid WebAssembly module
	reasonInstantiate   // instantiation failed
	reasonBadImport     // imports something other than arqon.log
	reasonMissingExport // a required export is missing
	reasonBadSignature  // an export has the wrong type
	reasonABIVersion    // arqon_policy_abi_version is not ABIVersion
	numReasons
)

var reasonNames = [numReasons]string{
	reasonNone:          "",
	reasonTrap:          "trap",
	reasonTimeout:       "timeout",
	reasonMemoryLimit:   "memory_limit",
	reasonBadReturn:     "bad_return",
	reasonAlloc:         "alloc",
	reasonCanceled:      "canceled",
	reasonClosed:        "closed",
	reasonBadRequest:    "bad_request",
	reasonCompile:       "compile",
	reasonInstantiate:   "instantiate",
	reasonBadImport:     "bad_import",
	reasonMissingExport: "missing_export",
	reasonBadSignature:  "bad_signature",
	reasonABIVersion:    "abi_version",
}

// String returns the metric label of r.
func (r failReason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// reasonMessages are the Decision.Message of fail-closed denies, built once
// so that a deny does not allocate.
var reasonMessages = func() (m [numReasons]string) {
	for i := range m {
		m[i] = "policy error: " + reasonNames[i]
	}
	return m
}()

// LoadError reports a policy file that could not be loaded.
type LoadError struct {
	// Path is the file, relative to Config.Dir.
	Path string
	// Reason is the fail-closed reason ("compile", "missing_export", ...).
	Reason string
	// Err is the underlying error.
	Err error
}

// Error implements error.
func (e *LoadError) Error() string {
	return fmt.Sprintf("policy: load %s: %s: %v", e.Path, e.Reason, e.Err)
}

// Unwrap returns the underlying error.
func (e *LoadError) Unwrap() error { return e.Err }

// loadErr builds a *LoadError.
func loadErr(path string, r failReason, format string, args ...any) *LoadError {
	return &LoadError{Path: path, Reason: r.String(), Err: fmt.Errorf(format, args...)}
}
