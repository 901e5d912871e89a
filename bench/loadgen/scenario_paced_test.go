package main

import "testing"

func TestParseRates(t *testing.T) {
	r, err := parseRates(" 100, 2500.5,,7 ")
	if err != nil || len(r) != 3 || r[0] != 100 || r[1] != 2500.5 || r[2] != 7 {
		t.Fatalf("parseRates = %v, %v", r, err)
	}
	for _, bad := range []string{"", "0", "-5", "x"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) accepted", bad)
		}
	}
}

// Several publishers' numbers are checked apart: interleaving them is
// neither a gap nor a step backward; a real gap or repeat is.
func TestMultiSeq(t *testing.T) {
	var m multiSeq
	for _, s := range []uint64{0, pubSeqBase, 1, pubSeqBase + 1, 2*pubSeqBase + 0, 2} {
		if g, b := m.see(s); g != 0 || b {
			t.Fatalf("see(%d) = gap %d, backward %v", s, g, b)
		}
	}
	if g, _ := m.see(pubSeqBase + 3); g != 1 {
		t.Fatalf("gap %d, want 1", g)
	}
	if _, b := m.see(1); !b {
		t.Fatal("a repeat was not seen as backward")
	}
	if got := m.got(); got != 7 {
		t.Fatalf("got %d, want 7", got)
	}
}
