// Package spinetest starts a NATS server for tests: the spine's embedded
// server listening on a free loopback port, with its credentials.
package spinetest

import (
	"testing"

	"github.com/arqonbus/arqonbus/spine"
)

// NATS starts a NATS server on a free loopback port, stopped when tb
// ends, and returns its URL with the gateway user's credentials in it
// (what nodes, brains and test clients connect with).
func NATS(tb testing.TB) string {
	tb.Helper()
	sp, err := spine.New(spine.Config{NodeID: "nats-host", EmbeddedListen: "127.0.0.1:0"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(sp.Close)
	return sp.EmbeddedGatewayURL()
}
