package plan_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/scaletest"
	"github.com/egresskit/egress/store"
)

// TestNTPServersLinear: every flow to UDP port 123 puts its address in
// the "ntp servers" rule. A local user can make the learner see as many
// of those as the store keeps (one datagram to each address), and an
// export is another host's word: the builder kept the list distinct by a
// linear search per flow, so 100k of them took seconds and 1M hours.
// The plan of n NTP flows must cost about what n other flows cost: the
// ratio of the two, on the same machine (the best of three each), stays
// far below what the search made of it (at 10k flows already 79 ms, at
// 100k over the limit: 10x, and at least 2 s).
func TestNTPServersLinear(t *testing.T) {
	const n = 100_000
	ntp, tcp := make([]store.Flow, n), make([]store.Flow, n)
	for i := range n {
		ip := netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)})
		ntp[i] = pflow(1000, plan.ProtoUDP, ip.String(), 123, 5, tp)
		tcp[i] = pflow(1000, plan.ProtoTCP, ip.String(), 443, 5, tp)
	}
	o := plan.Options{Mode: plan.ModeEnforce, Now: tp}
	var p *plan.Plan
	build := func(flows []store.Flow) func() func() {
		return func() func() { return func() { p = plan.Build(flows, o) } }
	}
	ref := scaletest.Best(t, "the plan of TCP flows", time.Hour, build(tcp))
	d := scaletest.Best(t, "the plan of NTP flows", max(10*ref, 2*time.Second), build(ntp))
	t.Logf("%d NTP flows %v, %d TCP flows %v: %.2fx", n, d, n, ref, float64(d)/float64(ref))
	// The rule holds each address once, sorted.
	var addrs []netip.Addr
	for _, r := range p.Rules {
		if r.Allow != nil && r.Allow.Port == 123 {
			addrs = append(addrs, r.Allow.Addrs...)
		}
	}
	if len(addrs) != n || !slices.IsSortedFunc(addrs, netip.Addr.Compare) {
		t.Fatalf("the ntp servers rule holds %d addresses (sorted: %v), want %d", len(addrs), slices.IsSortedFunc(addrs, netip.Addr.Compare), n)
	}
}
