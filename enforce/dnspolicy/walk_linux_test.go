//go:build linux

package dnspolicy

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The kernel walks a name a label at a time (a bpf_loop call per label,
// a bounded loop over its characters) and hashes wildcard suffixes from
// its text. TestProgramAgreesOnNameShapes checks that walk against the
// plain Go reference on names built near each of its edges: labels of 1
// to 63 characters, names around 253 characters, up to 127 labels, more
// labels than the 8 wildcard suffixes tried, mixed case, a dot or NUL
// inside a label, a label or question cut short, a compression pointer.

// walkQueries is DP_WALK_QUERIES (default 20000): the names the test tries.
func walkQueries() int {
	if n, err := strconv.Atoi(os.Getenv("DP_WALK_QUERIES")); err == nil && n > 0 {
		return n
	}
	return 20000
}

func TestProgramAgreesOnNameShapes(t *testing.T) {
	entries, _ := Dedup([]Entry{
		{UID: 0, Name: "www.example.lab"}, {UID: 0, Name: "*.cdn.lab"}, {UID: AllUsers, Name: "*.a.b.c.d.e.f.g.h"},
		{UID: AllUsers, Name: "*.i.j.k.l.m.n.o.p.q"}, {UID: 0, Name: "*." + long(63) + ".lab"},
		{UID: 7, Name: "*.seven.lab"},
	})
	objs := loadForRun(t, Enforce, entries)
	r := rand.New(rand.NewPCG(253, 63))
	agreeWithReference(t, objs, entries, walkQueries(), func() []byte { return shapedQuery(r) })
}

// shapedQuery is a query for a generated name, sometimes damaged.
func shapedQuery(r *rand.Rand) []byte {
	suffixes := []string{"", "cdn.lab", "a.b.c.d.e.f.g.h", "i.j.k.l.m.n.o.p.q", long(63) + ".lab", "seven.lab", "example.lab"}
	var labels []string
	if s := suffixes[r.IntN(len(suffixes))]; s != "" {
		labels = strings.Split(s, ".")
	}
	// Prepend labels up to a text length around the limit, or a few.
	target := r.IntN(8)
	if r.IntN(3) == 0 {
		target = 200 + r.IntN(70)
	}
	short := r.IntN(5) == 0 // one-character labels: up to 127 of them
	for text := len(strings.Join(labels, ".")); ; {
		if target < 8 && len(labels) >= target+1 || target >= 8 && text >= target || len(labels) > 140 {
			break
		}
		l := 1 + r.IntN(63)
		if short {
			l = 1
		} else if r.IntN(2) == 0 {
			l = 1 + r.IntN(3)
		}
		lab := []byte(long(l))
		for j := range lab {
			lab[j] = "abcXYZ019-_"[r.IntN(11)]
		}
		labels = append([]string{string(lab)}, labels...)
		text += l + 1
	}
	if len(labels) == 0 {
		labels = []string{"x"}
	}
	if r.IntN(2) == 0 && labels[0] == "www" {
		labels[0] = "WwW"
	}
	if len(labels) == 2 && r.IntN(4) == 0 {
		labels = []string{"www", "example", "lab"}
	}
	return damage(r, wireQuery(labels))
}

// wireQuery packs a query by hand (dns.Msg refuses names over 255).
func wireQuery(labels []string) []byte {
	m := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range labels {
		m = append(m, byte(len(l)))
		m = append(m, l...)
	}
	m = append(m, 0, 0, 1, 0, 1)
	return m
}

// damage, one time in three, breaks a query in one of the ways the
// walk must refuse (or must not be fooled by).
func damage(r *rand.Rand, m []byte) []byte {
	if r.IntN(3) != 0 {
		return m
	}
	name := m[12 : len(m)-4] // the labels and the final zero
	switch r.IntN(6) {
	case 0: // cut inside the name or the question
		return m[:12+r.IntN(len(m)-12)]
	case 1: // a dot or a NUL inside a label
		if i := 12 + 1 + r.IntN(len(name)-1); m[i] != 0 {
			m[i] = ".\x00"[r.IntN(2)]
		}
	case 2: // a compression pointer instead of the rest
		i := 12 + r.IntN(len(name))
		m = append(m[:i], 0xc0, 0x0c, 0, 1, 0, 1)
	case 3: // a label length that overruns
		m[12] = byte(min(63, int(m[12])+1+r.IntN(5)))
	case 4: // two questions
		binary.BigEndian.PutUint16(m[4:], 2)
	case 5: // upper case everywhere
		for i := 12; i < len(m)-4; i++ {
			if c := m[i]; c >= 'a' && c <= 'z' {
				m[i] = c - 32
			}
		}
	}
	return m
}

// TestProgramHeaderPaths: the program reads the common IPv4 and IPv6
// headers straight from the packet and leaves the rest (IPv4 options,
// IPv6 extension headers) to l4_hdr; both ways decide alike.
func TestProgramHeaderPaths(t *testing.T) {
	objs := loadForRun(t, Enforce, runEntries())
	allowed, denied := query("www.example.lab"), query("x.tunnel.evil")
	for _, c := range []struct {
		name  string
		frame func(dport uint16, payload []byte) []byte
	}{
		{"ipv4", ipv4UDP},
		{"ipv4_options", ipv4OptionsUDP},
		{"ipv6", func(d uint16, p []byte) []byte { return ipv6UDP(d, p, false) }},
		{"ipv6_hop_by_hop", func(d uint16, p []byte) []byte { return ipv6UDP(d, p, true) }},
	} {
		for _, q := range []struct {
			what  string
			dport uint16
			msg   []byte
			want  uint32
		}{{"allowed", 53, allowed, 1}, {"denied", 53, denied, 0}, {"not DNS", 443, denied, 1}} {
			if got, _ := runProg(t, objs.DnsPolicy, c.frame(q.dport, q.msg), 1); got != q.want {
				t.Errorf("%s, %s: verdict %d, want %d", c.name, q.what, got, q.want)
			}
		}
	}
}

// ipv4OptionsUDP is ipv4UDP with a 24-byte IP header (four NOP options).
func ipv4OptionsUDP(dport uint16, payload []byte) []byte {
	p := ipv4UDPPacket(dport, payload)
	p = append(p[:20:20], append([]byte{1, 1, 1, 1}, p[20:]...)...)
	p[0] = 0x46
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	eth := make([]byte, 14)
	eth[12] = 0x08
	return append(eth, p...)
}

// ipv6UDP is an Ethernet frame of an IPv6 UDP datagram, with an empty
// hop-by-hop options header when hbh.
func ipv6UDP(dport uint16, payload []byte, hbh bool) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	next := byte(17)
	if hbh {
		udp = append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, udp...) // PadN
		next = 0
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	ip[6], ip[7] = next, 64
	ip[8], ip[23] = 0xfd, 2
	ip[24], ip[39] = 0xfd, 1
	return append(append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd}, ip...), udp...)
}
