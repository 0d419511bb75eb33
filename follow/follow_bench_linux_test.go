//go:build linux

package follow

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
)

// BenchmarkFollowEgress times the follower's egress program in the kernel
// (BPF_PROG_TEST_RUN) on a UDP datagram to port 20000, the packet every
// non-DNS packet of the followed cgroup looks like: unmarked (the fast
// path: the mark test and a look at the headers), with the follow bit and
// no authorization (the check that drops it), and an empty cgroup_skb
// program for comparison. The per-packet figure of the whole stack is in
// bench/enforcebench (case "set, 10+follow").
//
//	go test ./enforce -run '^$' -bench FollowEgress -benchtime 2000000x
func BenchmarkFollowEgress(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to load eBPF")
	}
	s, err := bpf.LoadFollow()
	if err != nil {
		b.Fatal(err)
	}
	netns, err := enforcedNetns(nft.Target{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Variables["netns_cookie"].Set(netns); err != nil {
		b.Fatal(err)
	}
	var objs bpf.FollowObjects
	if err := s.LoadAndAssign(&objs, nil); err != nil {
		b.Fatal(err)
	}
	defer objs.Close()
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.CGroupSKB, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	pkt := udpPacket(20000, 16)
	for _, c := range []struct {
		name string
		prog *ebpf.Program
		mark uint32
		want uint32
	}{
		{"empty program", empty, 0, 1},
		{"unmarked", objs.FollowEgress, 0, 1},
		{"forged mark", objs.FollowEgress, plan.DefaultFollowMark, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := [3]uint32{0, 0, c.mark} // __sk_buff: len, pkt_type, mark
			ret, err := c.prog.Run(&ebpf.RunOptions{Data: pkt, Context: ctx[:], Repeat: uint32(b.N)})
			if err != nil {
				b.Fatal(err)
			}
			if ret != c.want {
				b.Fatalf("verdict %d, want %d", ret, c.want)
			}
		})
	}
}

// udpPacket is an Ethernet frame holding an IPv4 UDP datagram from
// 10.77.0.2 to 10.77.0.1:port.
func udpPacket(port uint16, payload int) []byte {
	p := make([]byte, 14+20+8+payload)
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, plan.ProtoUDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+payload))
	copy(ip[12:], []byte{10, 77, 0, 2})
	copy(ip[16:], []byte{10, 77, 0, 1})
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payload))
	return p
}
