package dnsanswer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// checkInvariants checks what every successful Parse must guarantee.
func checkInvariants(t *testing.T, a *Answer) {
	t.Helper()
	if a == nil {
		t.Fatal("nil Answer without error")
	}
	checkName(t, "question", a.Question)
	for i, ad := range a.Addrs {
		if !ad.IP.IsValid() {
			t.Fatalf("addr %d: invalid IP", i)
		}
		if ad.IP.Is4In6() {
			t.Fatalf("addr %d: v4-mapped IP %v", i, ad.IP)
		}
		if ad.IP.Zone() != "" {
			t.Fatalf("addr %d: zone in %v", i, ad.IP)
		}
		if len(ad.Names) == 0 || len(ad.Names) > maxNames {
			t.Fatalf("addr %d: %d names", i, len(ad.Names))
		}
		seen := make(map[string]bool)
		for _, n := range ad.Names {
			checkName(t, fmt.Sprintf("addr %d name", i), n)
			if seen[n] {
				t.Fatalf("addr %d: duplicate name %q in %q", i, n, ad.Names)
			}
			seen[n] = true
		}
	}
}

func checkName(t *testing.T, what, n string) {
	t.Helper()
	if n != strings.ToLower(n) {
		t.Fatalf("%s %q is not lower-case", what, n)
	}
	// dns.IsFqdn knows about escaped dots ("a\.").
	if dns.IsFqdn(n) {
		t.Fatalf("%s %q has a trailing dot", what, n)
	}
}

func fuzzSeeds(f *testing.F) [][]byte {
	build := func(qname string, qtype uint16, compress bool, rrs ...string) []byte {
		m := new(dns.Msg)
		m.SetQuestion(qname, qtype)
		m.Response = true
		m.Compress = compress
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		m.SetEdns0(1232, false)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	var large []string
	for i := range 60 {
		large = append(large, fmt.Sprintf("big.example.net. 30 IN A 10.0.0.%d", i))
	}
	chain := build("www.example.com.", dns.TypeA, true,
		"www.example.com. 3600 IN CNAME a.cdn.net.",
		"a.cdn.net. 300 IN CNAME b.cdn.net.",
		"b.cdn.net. 20 IN A 1.2.3.4",
		"b.cdn.net. 20 IN AAAA ::ffff:1.2.3.5")
	seeds := [][]byte{
		build("example.com.", dns.TypeA, false, "example.com. 300 IN A 93.184.216.34"),
		build("v6.example.org.", dns.TypeAAAA, true, "v6.example.org. 60 IN AAAA 2001:db8::1"),
		chain,
		build("Loop.", dns.TypeA, true, "loop. 1 IN CNAME loop2.", "loop2. 1 IN CNAME LOOP.", "loop. 1 IN A 192.0.2.1"),
		build("big.example.net.", dns.TypeA, false, large...),
		build("big.example.net.", dns.TypeA, true, large...),
		// Truncated copies.
		chain[:len(chain)/2],
		chain[:40],
		chain[:13],
		// Compression pointer loop in the question.
		{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1},
		{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xC0, 14, 0xC0, 12, 0, 1, 0, 1},
		// Huge counts.
		{0x12, 0x34, 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 192, 0, 2, 1},
		{0x12, 0x34, 0x81, 0x80, 0, 0, 0xff, 0xff, 0, 0, 0, 0},
		// Empty and short.
		{},
		{0x81},
	}
	// A bad record after good ones.
	bad := slices.Clone(seeds[0])
	bad = append(bad, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3)
	binary.BigEndian.PutUint16(bad[6:], 2)
	seeds = append(seeds, bad)
	return seeds
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, origLen := range []int{len(data), len(data) + 100} {
			a, err := Parse(data, origLen)
			if errors.Is(err, errPanic) {
				t.Fatalf("Parse(%x, %d) panicked: %v", data, origLen, err)
			}
			if err != nil {
				if a != nil {
					t.Fatalf("Parse returned both %+v and %v", a, err)
				}
				continue
			}
			checkInvariants(t, a)
			if origLen > len(data) && !a.Partial {
				t.Fatalf("Parse(%x, %d): short copy not Partial", data, origLen)
			}
		}
	})
}
