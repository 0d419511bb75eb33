package store

import (
	"slices"
	"testing"
)

// TestFrontedIgnoresAddresses: a client that connects by address sends
// the address as its HTTP Host; that is no name, so not a fronted one (the
// demo's report said "FRONTED: 10.78.0.10 is not among the DNS names").
func TestFrontedIgnoresAddresses(t *testing.T) {
	f := Flow{Hostnames: []string{"www.demo.lan.", "web.demo.lan"},
		Presented: []string{"10.78.0.10", "[fd78::10]", "fd78::10", "WWW.demo.lan", "other.example"}}
	if got := f.Fronted(); !slices.Equal(got, []string{"other.example"}) {
		t.Errorf("fronted %q, want only other.example", got)
	}
}
