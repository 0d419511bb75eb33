//go:build linux

package nft

import (
	"net/netip"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

func TestElementKeyRoundTrip(t *testing.T) {
	for _, e := range []plan.Element{
		{UID: 65534, IP: netip.MustParseAddr("10.77.0.1"), Proto: plan.ProtoTCP, Port: 8080},
		{UID: 0, IP: netip.MustParseAddr("2001:db8::1"), Proto: plan.ProtoUDP, Port: 53},
	} {
		k := elementKey(e)
		got, ok := parseElementKey(k)
		if !ok || got.Key() != e.Key() {
			t.Errorf("%s -> %x -> %s", e.Key(), k, got.Key())
		}
	}
}
