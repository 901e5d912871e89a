package policy

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"unicode/utf8"
)

// msgAt returns memory of size n with a length-prefixed msg at ptr.
func msgAt(n, ptr int, msg string) []byte {
	mem := make([]byte, n)
	binary.LittleEndian.PutUint32(mem[ptr:], uint32(len(msg)))
	copy(mem[ptr+4:], msg)
	return mem
}

func TestDecodeResult(t *testing.T) {
	mem := msgAt(256, 16, "nope")
	cases := []struct {
		name string
		r    uint64
		mem  []byte
		code string
		msg  string
		ok   bool
	}{
		// Decide treats 0 as allow before decoding; decoded, it is a deny.
		{"zero", 0, mem, "POLICY_BLOCKED", "", true},
		{"blocked, no message", 1, mem, "POLICY_BLOCKED", "", true},
		{"default reason with message", 16 << 32, mem, "POLICY_BLOCKED", "nope", true},
		{"authz with message", 16<<32 | 2, mem, "AUTHORIZATION_DENIED", "nope", true},
		{"validation", 3, mem, "VALIDATION_ERROR", "", true},
		{"limit", 4, mem, "LIMIT_EXCEEDED", "", true},
		{"rate", 5, mem, "RATE_LIMIT_EXCEEDED", "", true},
		{"unknown reason", 6, mem, "", "", false},
		{"reason -1", 0xffffffff, mem, "", "", false},
		{"pointer past memory", 256 << 32, mem, "", "", false},
		{"empty message at the very end", 252 << 32, msgAt(256, 252, ""), "POLICY_BLOCKED", "", true},
		{"length past memory", 248 << 32, msgAt(256, 248, "abcde"), "", "", false},
		{"prefix cut by the end", 253 << 32, mem, "", "", false},
		{"all ones", ^uint64(0), mem, "", "", false},
		{"message too long", 0 | 8<<32, msgAt(2048, 8, strings.Repeat("x", MaxMessageLen+1)), "", "", false},
		{"message at max", 0 | 8<<32, msgAt(2048, 8, strings.Repeat("x", MaxMessageLen)), "POLICY_BLOCKED", strings.Repeat("x", MaxMessageLen), true},
	}
	for _, c := range cases {
		code, msg, ok := decodeResult(c.r, c.mem)
		if code != c.code || string(msg) != c.msg || ok != c.ok {
			t.Errorf("%s: decodeResult(%#x) = %q, %q, %v; want %q, %q, %v", c.name, c.r, code, msg, ok, c.code, c.msg, c.ok)
		}
	}
}

func TestInstanceMessage(t *testing.T) {
	in := &instance{}
	if got := in.message(nil); got != defaultDenyMessage {
		t.Errorf("empty message: %q", got)
	}
	a := in.message([]byte("same"))
	if n := testing.AllocsPerRun(100, func() { _ = in.message([]byte("same")) }); n != 0 {
		t.Errorf("repeated message allocates %v times", n)
	}
	if b := in.message([]byte("same")); b != a {
		t.Error("repeated message changed")
	}
	if got := in.message([]byte("bad \xff utf8")); !utf8.ValidString(got) || got != "bad \uFFFD utf8" {
		t.Errorf("invalid UTF-8 message: %q", got)
	}
}

// FuzzDecodeResult checks that any result word against any memory decodes
// without panicking, and that a decoded message lies inside memory, within
// MaxMessageLen, exactly where the ABI says.
func FuzzDecodeResult(f *testing.F) {
	f.Add(uint64(1), []byte{})
	f.Add(uint64(16<<32|2), msgAt(64, 16, "role reader may not publish"))
	f.Add(^uint64(0), []byte{1, 2, 3, 4})
	f.Add(uint64(0xfffffffc<<32), []byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, r uint64, mem []byte) {
		code, msg, ok := decodeResult(r, mem)
		if !ok {
			if code != "" || msg != nil {
				t.Fatalf("failed decode returned %q, %q", code, msg)
			}
			return
		}
		if uint32(r) >= numDenyReasons || code != denyCodes[uint32(r)] {
			t.Fatalf("reason %d decoded as %q", uint32(r), code)
		}
		ptr := r >> 32
		if ptr == 0 {
			if msg != nil {
				t.Fatal("message without a pointer")
			}
			return
		}
		n := uint64(binary.LittleEndian.Uint32(mem[ptr:]))
		if n > MaxMessageLen || uint64(len(msg)) != n || !bytes.Equal(msg, mem[ptr+4:ptr+4+n]) {
			t.Fatalf("message %q does not match memory at %d", msg, ptr)
		}
	})
}
