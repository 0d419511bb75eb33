//go:build linux

package enforce

import (
	"net/netip"
	"testing"
)

func TestElementKeyRoundTrip(t *testing.T) {
	for _, e := range []Element{
		{UID: 65534, IP: netip.MustParseAddr("10.77.0.1"), Proto: ProtoTCP, Port: 8080},
		{UID: 0, IP: netip.MustParseAddr("2001:db8::1"), Proto: ProtoUDP, Port: 53},
	} {
		k := elementKey(e)
		got, ok := parseElementKey(k)
		if !ok || got.Key() != e.Key() {
			t.Errorf("%s -> %x -> %s", e.Key(), k, got.Key())
		}
	}
}
