//go:build linux

package dnspolicy

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/internal/lab"
)

// The program's own cost, through BPF_PROG_TEST_RUN on a built packet
// (the test run's socket is in this namespace, uid 0): a packet that is no
// query, an allowed query (one lookup), a denied one (the name, then
// eight wildcard suffixes, two lookups each), a denied 250-character name.

// ipv4UDP is an Ethernet frame (the test run takes the Ethernet header
// off) of an IPv4 UDP datagram.
func ipv4UDP(dport uint16, payload []byte) []byte {
	eth := make([]byte, 14)
	eth[12] = 0x08
	return append(eth, ipv4UDPPacket(dport, payload)...)
}

func ipv4UDPPacket(dport uint16, payload []byte) []byte {
	p := make([]byte, 28, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(28+len(payload)))
	p[8] = 64
	p[9] = 17
	copy(p[12:], []byte{10, 77, 0, 2})
	copy(p[16:], []byte{10, 77, 0, 1})
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	return append(p, payload...)
}

func loadForRun(tb testing.TB, mode Mode, entries []Entry) *bpf.DnspolicyObjects {
	lab.Require(tb)
	cookie, err := netnsCookie(nft.Target{})
	if err != nil {
		tb.Fatal(err)
	}
	var objs bpf.DnspolicyObjects
	key, err := newKey()
	if err != nil {
		tb.Fatal(err)
	}
	if err := load(&objs, mode, cookie, key, len(entries), lab.NewBPFFS(tb)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { objs.Close() })
	if err := fill(&objs, key, entries); err != nil {
		tb.Fatal(err)
	}
	return &objs
}

func runProg(tb testing.TB, p *ebpf.Program, pkt []byte, repeat uint32) (uint32, float64) {
	ret, d, err := p.Benchmark(pkt, int(repeat), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ret, float64(d.Nanoseconds())
}

var costCases = []struct {
	name string
	pkt  []byte
	want uint32
}{
	{"not_dns", ipv4UDP(443, make([]byte, 64)), 1},
	{"allowed", ipv4UDP(53, query("www.example.lab")), 1},
	{"allowed_wildcard", ipv4UDP(53, query("a.b.c.cdn.lab")), 1},
	{"denied", ipv4UDP(53, query("mzxw6ytboi0001gm5qgcy3uebxgc.a.b.c.d.e.f.g.t.exfil.evil")), 0},
	{"denied_long", ipv4UDP(53, query(long(63)+"."+long(63)+"."+long(63)+"."+long(54)+".evil")), 0},
}

// TestProgramVerdicts: what the benchmark measures is what the kernel
// decides (and the Go hash agrees with the kernel's).
func TestProgramVerdicts(t *testing.T) {
	objs := loadForRun(t, Enforce, runEntries())
	for _, c := range costCases {
		if got, _ := runProg(t, objs.DnsPolicy, c.pkt, 1); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
}

func BenchmarkProgramCost(b *testing.B) {
	objs := loadForRun(b, Enforce, runEntries())
	for _, c := range costCases {
		b.Run(c.name, func(b *testing.B) {
			_, ns := runProg(b, objs.DnsPolicy, c.pkt, uint32(max(b.N, 1)))
			b.ReportMetric(ns, "ns/packet")
		})
	}
}

// runEntries are learned's, with alice's name for root: the test run's
// socket is root's.
func runEntries() []Entry {
	e, _ := Dedup(append([]Entry{{UID: 0, Name: "www.example.lab"}}, learned...))
	return e
}
