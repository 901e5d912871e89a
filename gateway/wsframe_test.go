package gateway

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

func TestServerHeader(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 1 << 20} {
		b := make([]byte, maxServerHeader+n)
		s := putServerHeader(b, maxServerHeader, ws.OpText, n)
		h, err := ws.ReadHeader(bytes.NewReader(b[s:]))
		if err != nil || h.Length != int64(n) || !h.Fin || h.OpCode != ws.OpText || h.Masked {
			t.Fatalf("n=%d: %+v %v", n, h, err)
		}
		if maxServerHeader-s != serverHeaderLen(n) {
			t.Fatalf("n=%d: header len", n)
		}
	}
}

// FuzzParseClientHeader compares the incremental header parser with
// gobwas/ws's ReadHeader on arbitrary bytes.
func FuzzParseClientHeader(f *testing.F) {
	f.Add(frame(true, ws.OpText, []byte("hello")))
	f.Add(frame(false, ws.OpBinary, make([]byte, 300)))
	f.Add(frame(true, ws.OpPing, nil))
	f.Add([]byte{0x81, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4})
	f.Add([]byte{0x81, 0x02, 'h', 'i'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseClientHeader(b)
		if err == errNeedMore {
			if _, rerr := ws.ReadHeader(bytes.NewReader(b)); rerr == nil {
				// ws.ReadHeader accepts fewer bytes only if it does not
				// need a mask we require; it must be an unmasked frame.
				if b[1]&0x80 != 0 {
					t.Fatalf("need more for %x but ReadHeader succeeded", b)
				}
			}
			return
		}
		ref, rerr := ws.ReadHeader(bytes.NewReader(b))
		if rerr != nil {
			if err == nil {
				t.Fatalf("accepted %x that ReadHeader rejects: %v", b, rerr)
			}
			return
		}
		if err == errBadLength {
			return // non-minimal lengths: RFC 6455 requires minimal encoding
		}
		if n > len(b) {
			t.Fatalf("header length %d > input %d", n, len(b))
		}
		if ref.Fin != h.Fin || ref.OpCode != h.OpCode || ref.Masked != h.Masked || ref.Length != h.Length || ref.Rsv != h.Rsv {
			if err == nil {
				t.Fatalf("%x: got %+v want %+v", b, h, ref)
			}
			return
		}
		if h.Masked && ref.Mask != h.Mask {
			t.Fatalf("%x: mask", b)
		}
	})
}

func BenchmarkParseClientHeader(b *testing.B) {
	f := frame(true, ws.OpText, make([]byte, 200))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := parseClientHeader(f); err != nil {
			b.Fatal(err)
		}
	}
}
