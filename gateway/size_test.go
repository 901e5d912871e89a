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
	if size > 320 {
		t.Fatalf("conn struct grew to %d bytes (budget 320)", size)
	}
}
