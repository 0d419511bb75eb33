//go:build linux

package monitor

import (
	"context"
	"net/netip"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestSockDiagFindsAUDPSendersCgroup: the same for a UDP sender (socat,
// a connected socket, as a service's NTP or DNS client would hold): asked
// by the logged packet's addresses and ports, sock_diag gives its cgroup.
// udp_diag takes the two ends the other way round from tcp_diag; asked as
// for TCP, it found no socket, so no UDP denial was ever put to a service.
func TestSockDiagFindsAUDPSendersCgroup(t *testing.T) {
	lab.Require(t, "socat", "ss")
	pair := lab.NewPair(t)
	lab.ListenUDP(t, pair.Server, lab.ServerIP4+":9998")
	cg := lab.NewCgroup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sender := lab.As{UID: 65534, GID: 65534, Netns: pair.Client, Cgroup: cg}.Command(ctx, "sh", "-c",
		"while :; do echo x; sleep 0.2; done | socat - UDP:"+lab.ServerIP4+":9998")
	if err := sender.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = sender.Wait() }()
	sport, d, want := awaitSender(t, pair, cg, "the sender's socket", "-unH", "dst", lab.ServerIP4+":9998")
	client, server := netip.MustParseAddr(lab.ClientIP4), netip.MustParseAddr(lab.ServerIP4)
	if got := d.cgroupID(17, client, sport, server, 9998); got != want {
		t.Errorf("cgroup id %d, want %d (the cgroup's inode)", got, want)
	}
	if got := d.cgroupID(17, client, sport, server, 9997); got != 0 {
		t.Errorf("another destination port: cgroup id %d, want 0", got)
	}
}
