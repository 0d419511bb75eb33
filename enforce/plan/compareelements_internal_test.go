package plan

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestCompareElementsAsFlowKeys: compareElements, written out for speed,
// orders elements as store.FlowKey.Compare orders their keys (pairs that
// differ in one field or several, IPv4 and IPv6, equal pairs).
func TestCompareElementsAsFlowKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ips := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("::ffff:10.0.0.1")}
	el := func() Element {
		return Element{UID: 1000 + uint32(rng.IntN(3)), IP: ips[rng.IntN(len(ips))],
			Proto: []uint8{6, 17}[rng.IntN(2)], Port: []uint16{53, 443, 8443}[rng.IntN(3)]}
	}
	for range 20000 {
		x, y := el(), el()
		if got, want := compareElements(&x, &y), x.flowKey().Compare(y.flowKey()); got != want {
			t.Fatalf("compareElements(%+v, %+v) = %d, FlowKey.Compare %d", x.flowKey(), y.flowKey(), got, want)
		}
	}
}
