package plan_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/scaletest"
)

// TestDNSServersLinear: every apply's guard lists the plan's DNS servers
// (the UDP and the TCP rule name the same ones), and the configuration
// may name any number of them: a linear search per server made 20k
// servers take 0.6 s. The list of n costs about ten times that of n/10,
// and holds each server once, in the rules' order.
func TestDNSServersLinear(t *testing.T) {
	build := func(n int) *plan.Plan {
		o := plan.Options{Mode: plan.ModeEnforce, Now: tp}
		for i := range n {
			o.DNSServers = append(o.DNSServers, addrN(n-1-i), addrN(n-1-i)) // repeated, in reverse
		}
		return plan.Build(nil, o)
	}
	scaletest.Linear(t, "the DNS servers", 80_000, func(n int) func() {
		p := build(n)
		return func() {
			if s := p.DNSServers(); len(s) != n || !slices.IsSortedFunc(s, netip.Addr.Compare) {
				t.Errorf("%d DNS servers listed (sorted: %v), want %d", len(s), slices.IsSortedFunc(s, netip.Addr.Compare), n)
			}
		}
	})
	if s := build(2).DNSServers(); fmt.Sprint(s) != "[11.0.0.0 11.0.0.1]" {
		t.Fatalf("DNS servers %v", s)
	}
}
