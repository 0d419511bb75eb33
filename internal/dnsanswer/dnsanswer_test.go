package dnsanswer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// response builds a response to a question for qname/qtype with the given
// answer records in zone-file syntax.
func response(t testing.TB, qname string, qtype uint16, answers ...string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Id = 0x1234
	m.Response = true
	m.RecursionAvailable = true
	for _, s := range answers {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("NewRR(%q): %v", s, err)
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return b
}

func mustParse(t *testing.T, b []byte, origLen int) *Answer {
	t.Helper()
	a, err := Parse(b, origLen)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return a
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func checkAddrs(t *testing.T, got []Addr, want []Addr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d addrs %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i].IP != want[i].IP || got[i].TTL != want[i].TTL || !slices.Equal(got[i].Names, want[i].Names) {
			t.Errorf("addr %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestSimpleA(t *testing.T) {
	m := response(t, "Example.COM.", dns.TypeA, "example.com. 300 IN A 93.184.216.34")
	a := mustParse(t, pack(t, m), 0)
	if a.ID != 0x1234 || a.Question != "example.com" || a.QType != dns.TypeA || a.Rcode != dns.RcodeSuccess || a.Partial {
		t.Errorf("answer = %+v", a)
	}
	checkAddrs(t, a.Addrs, []Addr{{IP: addr("93.184.216.34"), Names: []string{"example.com"}, TTL: 300}})
	if !a.Addrs[0].IP.Is4() {
		t.Errorf("IP %v is not a 4-byte address", a.Addrs[0].IP)
	}
}

func TestAAAA(t *testing.T) {
	m := response(t, "v6.example.org.", dns.TypeAAAA,
		"v6.example.org. 60 IN AAAA 2001:db8::1",
		"v6.example.org. 60 IN AAAA ::ffff:192.0.2.7")
	a := mustParse(t, pack(t, m), 0)
	if a.QType != dns.TypeAAAA || a.Partial {
		t.Errorf("answer = %+v", a)
	}
	checkAddrs(t, a.Addrs, []Addr{
		{IP: addr("2001:db8::1"), Names: []string{"v6.example.org"}, TTL: 60},
		// A v4-mapped AAAA is reported as the IPv4 address.
		{IP: addr("192.0.2.7"), Names: []string{"v6.example.org"}, TTL: 60},
	})
}

func TestCNAMEChain(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprint("compress=", compress), func(t *testing.T) {
			m := response(t, "WWW.Example.com.", dns.TypeA,
				"www.example.com. 3600 IN CNAME A.cdn.net.",
				"a.cdn.net. 300 IN CNAME b.cdn.net.",
				"b.cdn.net. 20 IN A 1.2.3.4",
				"b.cdn.net. 20 IN A 1.2.3.5")
			m.Compress = compress
			a := mustParse(t, pack(t, m), 0)
			names := []string{"www.example.com", "a.cdn.net", "b.cdn.net"}
			checkAddrs(t, a.Addrs, []Addr{
				{IP: addr("1.2.3.4"), Names: names, TTL: 20},
				{IP: addr("1.2.3.5"), Names: names, TTL: 20},
			})
			// Names must not be shared between addresses.
			a.Addrs[0].Names[0] = "changed"
			if a.Addrs[1].Names[0] != "www.example.com" {
				t.Error("Names slices are shared between addresses")
			}
		})
	}
}

func TestCNAMEOrderQuestionFirst(t *testing.T) {
	// Records out of order, and an extra branch that does not involve the
	// question: the question still comes first.
	m := response(t, "q.example.", dns.TypeA,
		"other.example. 1 IN CNAME far.example.",
		"far.example. 1 IN CNAME end.example.",
		"end.example. 1 IN A 10.0.0.1",
		"q.example. 1 IN CNAME end.example.")
	a := mustParse(t, pack(t, m), 0)
	checkAddrs(t, a.Addrs, []Addr{
		{IP: addr("10.0.0.1"), Names: []string{"q.example", "other.example", "far.example", "end.example"}, TTL: 1},
	})
}

func TestTwoAddrsOneName(t *testing.T) {
	m := response(t, "multi.example.", dns.TypeA,
		"multi.example. 10 IN A 192.0.2.1",
		"multi.example. 11 IN A 192.0.2.2",
		"unrelated.example. 12 IN CNAME multi.example.")
	a := mustParse(t, pack(t, m), 0)
	names := []string{"multi.example", "unrelated.example"}
	checkAddrs(t, a.Addrs, []Addr{
		{IP: addr("192.0.2.1"), Names: names, TTL: 10},
		{IP: addr("192.0.2.2"), Names: names, TTL: 11},
	})
}

func TestCNAMELoop(t *testing.T) {
	m := response(t, "a.loop.", dns.TypeA,
		"a.loop. 1 IN CNAME b.loop.",
		"b.loop. 1 IN CNAME c.loop.",
		"c.loop. 1 IN CNAME a.loop.",
		"self.loop. 1 IN CNAME self.loop.",
		"c.loop. 1 IN A 192.0.2.9",
		"self.loop. 1 IN A 192.0.2.10")
	done := make(chan *Answer)
	go func() {
		a, err := Parse(pack(t, m), 0)
		if err != nil {
			t.Error(err)
		}
		done <- a
	}()
	select {
	case a := <-done:
		if a == nil {
			return
		}
		checkAddrs(t, a.Addrs, []Addr{
			{IP: addr("192.0.2.9"), Names: []string{"a.loop", "b.loop", "c.loop"}, TTL: 1},
			{IP: addr("192.0.2.10"), Names: []string{"self.loop"}, TTL: 1},
		})
	case <-time.After(5 * time.Second):
		t.Fatal("Parse hangs on a CNAME loop")
	}
}

func TestChainCaps(t *testing.T) {
	// A chain of 40 CNAMEs: only 16 hops are followed.
	var rrs []string
	for i := range 40 {
		rrs = append(rrs, fmt.Sprintf("n%d.example. 1 IN CNAME n%d.example.", i, i+1))
	}
	rrs = append(rrs, "n40.example. 1 IN A 192.0.2.1")
	a := mustParse(t, pack(t, response(t, "n0.example.", dns.TypeA, rrs...)), 0)
	if len(a.Addrs) != 1 {
		t.Fatalf("addrs = %+v", a.Addrs)
	}
	names := a.Addrs[0].Names
	if len(names) != maxChainDepth+1 || names[0] != "n24.example" || names[len(names)-1] != "n40.example" {
		t.Errorf("names = %q", names)
	}

	// 50 names pointing to the same target: at most 32 names.
	rrs = nil
	for i := range 50 {
		rrs = append(rrs, fmt.Sprintf("f%d.example. 1 IN CNAME t.example.", i))
	}
	rrs = append(rrs, "t.example. 1 IN A 192.0.2.1")
	a = mustParse(t, pack(t, response(t, "f0.example.", dns.TypeA, rrs...)), 0)
	if len(a.Addrs) != 1 || len(a.Addrs[0].Names) != maxNames || a.Addrs[0].Names[0] != "f0.example" {
		t.Errorf("addrs = %+v", a.Addrs)
	}
}

func TestIgnoredRecords(t *testing.T) {
	m := response(t, "x.example.", dns.TypeA,
		"x.example. 1 IN TXT \"hello\"",
		"x.example. 1 CH A 192.0.2.1",
		"x.example. 1 IN MX 10 mail.example.",
		"dangling.example. 1 IN CNAME nowhere.example.",
		"x.example. 1 IN A 192.0.2.2")
	m.Rcode = dns.RcodeNameError
	a := mustParse(t, pack(t, m), 0)
	if a.Rcode != dns.RcodeNameError || a.Partial {
		t.Errorf("answer = %+v", a)
	}
	checkAddrs(t, a.Addrs, []Addr{{IP: addr("192.0.2.2"), Names: []string{"x.example"}, TTL: 1}})
}

func TestExtendedRcode(t *testing.T) {
	m := response(t, "x.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.Rcode = dns.RcodeBadCookie // 23: needs the EDNS extended rcode
	a := mustParse(t, pack(t, m), 0)
	if a.Rcode != dns.RcodeBadCookie || a.Partial {
		t.Errorf("answer = %+v", a)
	}
}

func TestNoQuestion(t *testing.T) {
	m := response(t, "x.example.", dns.TypeA, "x.example. 1 IN A 192.0.2.2")
	m.Question = nil
	a := mustParse(t, pack(t, m), 0)
	if a.Question != "" || a.QType != 0 || a.Partial {
		t.Errorf("answer = %+v", a)
	}
	checkAddrs(t, a.Addrs, []Addr{{IP: addr("192.0.2.2"), Names: []string{"x.example"}, TTL: 1}})
}

// recordEnds returns the offsets at which each answer record of a packed
// message ends.
func recordEnds(t *testing.T, b []byte) []int {
	t.Helper()
	off := headerLen
	for range binary.BigEndian.Uint16(b[4:]) {
		_, next, err := dns.UnpackDomainName(b, off)
		if err != nil {
			t.Fatal(err)
		}
		off = next + 4
	}
	var ends []int
	for range binary.BigEndian.Uint16(b[6:]) {
		_, next, err := dns.UnpackRR(b, off)
		if err != nil {
			t.Fatal(err)
		}
		off = next
		ends = append(ends, off)
	}
	return ends
}

func TestTruncated(t *testing.T) {
	for _, compress := range []bool{false, true} {
		m := response(t, "www.example.com.", dns.TypeA,
			"www.example.com. 3600 IN CNAME a.cdn.net.",
			"a.cdn.net. 300 IN CNAME b.cdn.net.",
			"b.cdn.net. 20 IN A 1.2.3.4",
			"b.cdn.net. 20 IN A 1.2.3.5",
			"b.cdn.net. 20 IN AAAA 2001:db8::5",
			"b.cdn.net. 20 IN A 1.2.3.6")
		m.Ns = append(m.Ns, &dns.NS{Hdr: dns.RR_Header{Name: "cdn.net.", Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 5}, Ns: "ns.cdn.net."})
		m.SetEdns0(1232, false)
		m.Compress = compress
		full := pack(t, m)
		want := mustParse(t, full, len(full)).Addrs
		if len(want) != 4 {
			t.Fatalf("full message: addrs = %+v", want)
		}
		ends := recordEnds(t, full)
		// addrEnds[i] is the end offset of the record of want[i].
		addrEnds := []int{ends[2], ends[3], ends[4], ends[5]}

		for cut := 0; cut < len(full); cut++ {
			for _, origLen := range []int{len(full), cut} {
				a, err := Parse(full[:cut], origLen)
				if cut < headerLen {
					if err == nil {
						t.Errorf("compress=%v cut=%d: no error", compress, cut)
					}
					continue
				}
				if err != nil {
					t.Errorf("compress=%v cut=%d origLen=%d: %v", compress, cut, origLen, err)
					continue
				}
				if !a.Partial {
					t.Errorf("compress=%v cut=%d origLen=%d: not Partial", compress, cut, origLen)
				}
				complete := 0
				for _, e := range addrEnds {
					if e <= cut {
						complete++
					}
				}
				checkAddrs(t, a.Addrs, want[:complete])
			}
		}
	}
}

func TestBadRecordLate(t *testing.T) {
	m := response(t, "x.example.", dns.TypeA,
		"x.example. 1 IN A 192.0.2.1",
		"x.example. 1 IN A 192.0.2.2")
	b := pack(t, m)
	// A bad record (an A with 3 bytes of rdata) in the additional section.
	b = append(b, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3)
	binary.BigEndian.PutUint16(b[10:], 1)
	if err := new(dns.Msg).Unpack(b); err == nil {
		t.Fatal("miekg/dns accepts the bad record")
	}
	a := mustParse(t, b, len(b))
	if !a.Partial {
		t.Error("not Partial")
	}
	checkAddrs(t, a.Addrs, []Addr{
		{IP: addr("192.0.2.1"), Names: []string{"x.example"}, TTL: 1},
		{IP: addr("192.0.2.2"), Names: []string{"x.example"}, TTL: 1},
	})

	// The same bad record as the third answer: the first two are kept.
	b = pack(t, m)
	b = append(b, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3)
	b = append(b, pack(t, response(t, "x.example.", dns.TypeA, "x.example. 1 IN A 192.0.2.3"))[headerLen+15:]...)
	binary.BigEndian.PutUint16(b[6:], 4)
	a = mustParse(t, b, len(b))
	if !a.Partial || len(a.Addrs) != 2 {
		t.Errorf("answer = %+v", a)
	}
}

func TestQuery(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeA)
	_, err := Parse(pack(t, m), 0)
	if !errors.Is(err, ErrNotResponse) {
		t.Errorf("err = %v, want ErrNotResponse", err)
	}
}

func TestGarbage(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{},
		{0x12},
		{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0}, // 11 bytes
		// Question name with a reserved label type (0x40).
		{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0x40, 1, 2, 3, 4, 5, 6, 7},
		// Question name longer than 255 bytes.
		append([]byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}, slices.Repeat([]byte{63}, 300)...),
	} {
		if a, err := Parse(b, len(b)); err == nil {
			t.Errorf("Parse(%x) = %+v, want error", b, a)
		}
	}

	// Random bytes never panic; with the QR bit clear they are not responses.
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		b := make([]byte, r.IntN(600))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		a, err := Parse(b, len(b)+r.IntN(3))
		if len(b) >= headerLen && b[2]&0x80 == 0 && !errors.Is(err, ErrNotResponse) {
			t.Errorf("Parse(%x): err = %v, want ErrNotResponse", b, err)
		}
		if err == nil {
			checkInvariants(t, a)
		}
	}
}

func TestHugeCounts(t *testing.T) {
	// One question, then 65535 answers (and as many authority and
	// additional records) claimed in a 40-byte packet.
	b := []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	b = append(b, 0, 0, 1, 0, 1)                                 // root question
	b = append(b, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 192, 0, 2, 1) // root A 192.0.2.1
	b = append(b, make([]byte, 40-len(b))...)
	start := time.Now()
	for i := range len(b) + 1 {
		a, err := Parse(b[:i], 40)
		if err == nil && !a.Partial {
			t.Errorf("cut %d: not Partial", i)
		}
		if i == len(b) && (err != nil || len(a.Addrs) != 1) {
			t.Errorf("whole: %+v, %v", a, err)
		}
	}
	// Every count 65535, including the questions.
	b[4], b[5] = 0xff, 0xff
	for i := range len(b) + 1 {
		a, err := Parse(b[:i], len(b))
		if err == nil && !a.Partial {
			t.Errorf("all counts, cut %d: not Partial", i)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
}

func TestCompressionPointerLoop(t *testing.T) {
	hdr := []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}
	for name, b := range map[string][]byte{
		// Question name at offset 12 is a pointer to offset 12.
		"self": append(slices.Clone(hdr), 0xC0, 12, 0, 1, 0, 1),
		// 12 -> 14 -> 12.
		"two": append(slices.Clone(hdr), 0xC0, 14, 0xC0, 12, 0, 1, 0, 1),
		// A label, then a pointer back to the start of the name.
		"label": append(slices.Clone(hdr), 1, 'a', 0xC0, 12, 0, 1, 0, 1),
	} {
		t.Run(name, func(t *testing.T) {
			done := make(chan error)
			go func() {
				_, err := Parse(b, len(b))
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Error("no error")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("hang")
			}
		})
	}

	// A pointer loop in an answer record's name: the answer is Partial and
	// keeps the record before it.
	b := pack(t, response(t, "x.example.", dns.TypeA, "x.example. 1 IN A 192.0.2.1"))
	loopAt := len(b)
	b = append(b, 0xC0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 192, 0, 2, 2)
	binary.BigEndian.PutUint16(b[loopAt:], 0xC000|uint16(loopAt))
	binary.BigEndian.PutUint16(b[6:], 2)
	a := mustParse(t, b, len(b))
	if !a.Partial {
		t.Error("not Partial")
	}
	checkAddrs(t, a.Addrs, []Addr{{IP: addr("192.0.2.1"), Names: []string{"x.example"}, TTL: 1}})
}

func TestLarge(t *testing.T) {
	var rrs []string
	var want []Addr
	for i := range 60 {
		rrs = append(rrs, fmt.Sprintf("big.example.net. 30 IN A 10.0.%d.%d", i/10, i))
		want = append(want, Addr{IP: netip.AddrFrom4([4]byte{10, 0, byte(i / 10), byte(i)}), Names: []string{"big.example.net"}, TTL: 30})
	}
	b := pack(t, response(t, "big.example.net.", dns.TypeA, rrs...))
	if len(b) <= 1024 {
		t.Fatalf("message is only %d bytes", len(b))
	}
	a := mustParse(t, b, len(b))
	if a.Partial {
		t.Error("Partial")
	}
	checkAddrs(t, a.Addrs, want)
}
