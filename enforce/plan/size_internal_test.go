package plan

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

var sizeNow = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

// TestSizesAreNearTheTruth: the sizes the JSON and the script are made
// with are within a factor of two of what they turn out to be (a buffer
// made too small grows; one far too large wastes memory).
func TestSizesAreNearTheTruth(t *testing.T) {
	var flows []store.Flow
	for i := range 5000 {
		f := store.Flow{FlowKey: store.FlowKey{UID: 1000, Proto: ProtoTCP, IP: netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 443},
			Hits: 10, LastSeen: sizeNow, Hostnames: []string{fmt.Sprintf("svc%d.r%d.cdn.example.net", i, i%20)}}
		if i%10 == 0 {
			f.IP = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i))
		}
		flows = append(flows, f)
	}
	for _, follow := range []*FollowOptions{nil, {Mode: FollowBoth}} {
		p := Build(flows, Options{Mode: ModeEnforce, Now: sizeNow, Follow: follow, DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
		data, err := p.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var text bytes.Buffer
		if err := p.Text(&text); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			what       string
			made, real int
		}{{"json", p.jsonSize(0), len(data)}, {"script", p.textSize(), text.Len()}} {
			if c.made < c.real/2 || c.made > 2*c.real {
				t.Errorf("follow %v: %s made for %d bytes, is %d", follow != nil, c.what, c.made, c.real)
			}
			t.Logf("follow %v: %s made for %d bytes, is %d", follow != nil, c.what, c.made, c.real)
		}
	}
}
