//go:build linux

package enforce

import (
	"net/netip"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

func samplePlan(mode Mode) *Plan {
	uid := uint32(1000)
	flows := []store.Flow{
		flow(65534, ProtoTCP, "10.77.0.1", 8080, 3, "web.lab", "alias.lab"),
		flow(0, ProtoTCP, "10.77.0.1", 8080, 1),
		flow(1000, ProtoUDP, "10.77.0.1", 9999, 12),
		flow(65534, ProtoTCP, "fd77::1", 443, 7, "web.lab"),
		flow(107, ProtoUDP, "192.0.2.123", 123, 50),
		flow(0, ProtoICMP, "10.77.0.1", 0, 1),
	}
	return Build(flows, Options{
		Mode:       mode,
		DNSServers: []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd77::53")},
		NTPServers: []netip.Addr{netip.MustParseAddr("192.0.2.124")},
		AlwaysAllow: []Allow{
			{Proto: ProtoTCP, Dest: netip.MustParsePrefix("10.0.0.0/8"), Port: 443},
			{Proto: ProtoTCP, Dest: netip.MustParsePrefix("172.16.0.0/12"), Port: 22, UID: &uid, Reason: "backups"},
			{Proto: ProtoUDP, Dest: netip.MustParsePrefix("fd00:1::/64"), Port: 514},
			{Proto: ProtoICMP, Dest: netip.MustParsePrefix("10.77.0.0/16")},
			{Proto: ProtoTCP, Port: 25},
			{Dest: netip.MustParsePrefix("198.51.100.0/22")},
		},
		Now: t0,
	})
}

// TestTextAndNetlinkListTheSame loads the nft text into one namespace and
// applies the plan through netlink in another: nft lists the same table.
func TestTextAndNetlinkListTheSame(t *testing.T) {
	lab.Require(t, "nft")
	for _, mode := range []Mode{ModeAudit, ModeEnforce} {
		t.Run(string(mode), func(t *testing.T) {
			p := samplePlan(mode)
			byText, byNetlink := lab.NewNetns(t), lab.NewNetns(t)
			loadText(t, p, byText)
			res, err := Apply(p, Target{Netns: byNetlink.Name})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Verified || res.Elements != 5 {
				t.Errorf("apply result %+v", res)
			}
			a, b := listTable(t, byText, "egress"), listTable(t, byNetlink, "egress")
			if a != b {
				t.Errorf("listings differ\n--- nft -f:\n%s\n--- netlink:\n%s", a, b)
			}
		})
	}
}
