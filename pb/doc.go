// Package pb holds ArqonBus's wire messages: the client frames a WebSocket
// carries (ClientFrame, ServerFrame), the Envelope that travels between
// gateway nodes over NATS, and the PolicyRequest handed to Wasm policies.
//
// The *.pb.go files are generated from pb/proto by `make proto`
// (protoc-gen-go and protoc-gen-go-vtproto, pinned in the Makefile) and are
// committed; `make test` fails when they are stale. The JSON mapping of the
// client frames (json.go) is hand-written without reflection: it is the
// public contract for browsers, k6 and command-line users, documented in
// docs/PROTOCOL.md.
package pb
