package gateway

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps the per-connection struct small: it is paid by every
// idle connection.
func TestConnSize(t *testing.T) {
	size := unsafe.Sizeof(conn{})
	t.Logf("conn struct: %d bytes", size)
	// 352 is a malloc size class: 320 until the identity carried its
	// issuer and compiled capabilities (auth.Identity.Issuer, Grants),
	// +32 bytes per connection.
	if size > 352 {
		t.Fatalf("conn struct grew to %d bytes (budget 352, a size class)", size)
	}
}
