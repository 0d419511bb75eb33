//go:build linux

package dnspolicy

import (
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/follow"
)

// TestFollowerSlotAgreesWithPolicy: the follower's egress program with
// the policy in its slot decides every packet as the policy alone does
// (BPF_PROG_TEST_RUN): the follower's choice of the packets it passes on
// (dns_candidate) leaves out none the policy would stop. Packets of every
// header path (IPv4 with and without options, IPv6 with and without
// extension headers, UDP and TCP, to port 53 and others), then their IP
// and transport headers damaged at random: versions, lengths, protocols,
// fragment offsets, ports.
func TestFollowerSlotAgreesWithPolicy(t *testing.T) {
	objs := loadForRun(t, Enforce, runEntries())
	fol := loadFollowerForRun(t, nft.Target{})
	if err := follow.FillSlot(fol.DnsPolicySlot, objs.DnsPolicy); err != nil {
		t.Fatal(err)
	}
	allowed, denied := query("www.example.lab"), query("x.tunnel.evil")
	var bases [][]byte
	for _, msg := range [][]byte{allowed, denied} {
		for _, port := range []uint16{53, 443} {
			bases = append(bases, ipv4UDP(port, msg), ipv4OptionsUDP(port, msg), ipv6UDP(port, msg, false), ipv6UDP(port, msg, true),
				asTCP(ipv4UDP(port, tcpFrame(msg)), 14+20), asTCP(ipv6UDP(port, tcpFrame(msg), false), 14+40))
		}
	}
	r := rand.New(rand.NewPCG(18, 5))
	var byVerdict [2]int
	for i := range 6000 {
		pkt := append([]byte(nil), bases[i%len(bases)]...)
		if i >= len(bases) {
			for range 1 + r.IntN(3) {
				pkt[14+r.IntN(min(48, len(pkt)-14))] = byte(r.Uint32())
			}
		}
		want, _ := runProg(t, objs.DnsPolicy, pkt, 1)
		got, _ := runProg(t, fol.FollowEgress, pkt, 1)
		if got != want {
			t.Fatalf("case %d: the follower with the policy in its slot decides %d, the policy alone %d: %x", i, got, want, pkt)
		}
		byVerdict[got&1]++
	}
	t.Logf("6000 verdicts agree: %d passed, %d stopped", byVerdict[1], byVerdict[0])
	if byVerdict[0] < 300 {
		t.Errorf("the packets hardly test the stopped side: %v", byVerdict)
	}
}

// asTCP makes the UDP datagram of an Ethernet frame (its header at l4) a
// TCP segment: the same ports and a 20-byte header of flags PSH|ACK, the
// payload after it, the IP header's protocol and lengths as they were
// but for the 12 bytes more.
func asTCP(frame []byte, l4 int) []byte {
	tcp := make([]byte, 20)
	copy(tcp, frame[l4:l4+4])
	tcp[12] = 5 << 4
	tcp[13] = 0x18
	out := append(append(append([]byte(nil), frame[:l4]...), tcp...), frame[l4+8:]...)
	if out[14]>>4 == 4 {
		out[14+9] = 6
		n := uint16(len(out) - 14)
		out[14+2], out[14+3] = byte(n>>8), byte(n)
	} else {
		// the next header field of the last IPv6 header before the UDP one
		if out[14+6] == 17 {
			out[14+6] = 6
		} else {
			out[14+40] = 6
		}
		n := uint16(len(out) - 14 - 40)
		out[14+4], out[14+5] = byte(n>>8), byte(n)
	}
	return out
}

// loadFollowerForRun loads the follower's programs for the target's
// namespace (not attached, nothing pinned).
func loadFollowerForRun(tb testing.TB, target nft.Target) *bpf.FollowObjects {
	cookie, err := netnsCookie(target)
	if err != nil {
		tb.Fatal(err)
	}
	spec, err := bpf.LoadFollow()
	if err != nil {
		tb.Fatal(err)
	}
	if err := spec.Variables["netns_cookie"].Set(cookie); err != nil {
		tb.Fatal(err)
	}
	var objs bpf.FollowObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { objs.Close() })
	return &objs
}
