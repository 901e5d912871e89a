package valkeytest

import "testing"

func TestStartRestart(t *testing.T) {
	s := Start(t)
	if _, err := s.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Do("GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET = %q %v", v, err)
	}
	used, err := s.InfoMemoryUsed()
	if err != nil || used <= 0 {
		t.Fatalf("InfoMemoryUsed = %d %v", used, err)
	}
	addr := s.Addr()
	s.Kill()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("PING answered after Kill")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Restart moved %s to %s", addr, s.Addr())
	}
	if v, err := s.Do("EXISTS", "k"); err != nil || v != "0" {
		t.Fatalf("EXISTS after restart = %q %v (nothing is persisted)", v, err)
	}
}
