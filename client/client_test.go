package client

import (
	"strings"
	"testing"
)

func TestMatchTokens(t *testing.T) {
	cases := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b", "a.b", true},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{">", "x", true},
		{"*.b", "a.b", true},
		{"*.b", "a.c", false},
		{"a.b", "a.b.c", false},
	}
	for _, c := range cases {
		if got := matchTokens(strings.Split(c.pattern, "."), strings.Split(c.subject, ".")); got != c.want {
			t.Errorf("match(%q, %q) = %v, want %v", c.pattern, c.subject, got, c.want)
		}
	}
}

func TestPubFrameText(t *testing.T) {
	if f := pubFrame("s", []byte{0xff}, PublishOptions{}, JSON); f.Text {
		t.Fatal("invalid UTF-8 marked as text for JSON")
	}
	if f := pubFrame("s", []byte("hi"), PublishOptions{}, JSON); !f.Text {
		t.Fatal("JSON text not marked")
	}
	if f := pubFrame("s", []byte("hi"), PublishOptions{Headers: map[string]string{"k": "v"}}, Protobuf); f.Text || len(f.Headers) != 1 {
		t.Fatalf("protobuf frame %+v", f)
	}
}
