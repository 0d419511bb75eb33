package learn

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// answerWith is a DNS answer to uid's question name giving n IPv4
// addresses, the first base+0, then base+1...
func answerWith(t *testing.T, uid uint32, name string, base uint32, n int) DNSPacket {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Response = true
	for i := range n {
		v := base + uint32(i)
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)),
		})
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return DNSPacket{Time: time.Now(), UID: uid, Payload: b, OrigLen: len(b),
		Src: netip.MustParseAddrPort("192.0.2.53:53"), Dst: netip.MustParseAddrPort("192.0.2.1:40000")}
}

// TestPendingDNSIsBounded: a local user whose answers give many addresses
// (a wildcard name of its own, 250 addresses an answer, thousands of
// answers a second) grows the learner's DNS observations up to
// maxPendingDNS between two flushes; the rest is counted in the status
// and the run (dns_unrecorded), and the next window has room again.
func TestPendingDNSIsBounded(t *testing.T) {
	a := newAggregator(Filter{}, nil, nil)
	const per = 200
	answers := maxPendingDNS/per + 10 // 10 answers over the bound
	for i := range answers {
		a.addDNS(answerWith(t, 1000, "flood.example", 0x0a000000+uint32(i*per), per))
	}
	if got := len(a.dns); got != maxPendingDNS {
		t.Fatalf("%d DNS observations pending, want the bound %d", got, maxPendingDNS)
	}
	want := uint64(answers*per - maxPendingDNS)
	if got := a.status(time.Now()).DNSUnrecorded; got != want {
		t.Fatalf("dns_unrecorded %d, want %d", got, want)
	}
	tk := a.take()
	if len(tk.dns) != maxPendingDNS {
		t.Fatalf("the flush took %d observations, want %d", len(tk.dns), maxPendingDNS)
	}
	// A known observation still refreshes at the bound; the next window has room.
	a.addDNS(answerWith(t, 1001, "victim.example", 0xc0000201, 1))
	if len(a.dns) != 1 {
		t.Fatalf("after the flush %d observations pending, want 1", len(a.dns))
	}
	// What a failed flush gives back keeps the bound too.
	a.giveBack(nil, tk.dns)
	if got := len(a.dns); got != maxPendingDNS {
		t.Fatalf("after a give-back %d DNS observations pending, want %d", got, maxPendingDNS)
	}
	if got := a.status(time.Now()).DNSUnrecorded; got != want+1 {
		t.Fatalf("dns_unrecorded %d after the give-back, want %d", got, want+1)
	}
}

// TestPendingQuestionsBounded: a user asking a new name in every query
// adds a question each; between two flushes the learner keeps at most
// maxPendingQuestions of them, counts the rest (the store's
// questions_unrecorded), and a question held still counts its hits.
func TestPendingQuestionsBounded(t *testing.T) {
	a := newAggregator(Filter{}, nil, nil)
	const over = 5
	for i := range maxPendingQuestions + over {
		a.addDNS(answerWith(t, 1000, fmt.Sprintf("q%d.flood.example", i), 0x0a000001, 1))
	}
	a.addDNS(answerWith(t, 1000, "q0.flood.example", 0x0a000001, 1))
	if len(a.questions) != maxPendingQuestions || a.questionsOver != over {
		t.Fatalf("%d questions pending, %d counted over; want %d and %d", len(a.questions), a.questionsOver, maxPendingQuestions, over)
	}
	tk := a.take()
	hits := uint64(0)
	for _, q := range tk.questions {
		if q.Name == "q0.flood.example" {
			hits = q.Hits
		}
	}
	if len(tk.questions) != maxPendingQuestions || tk.questionsOver != over || hits != 2 {
		t.Fatalf("the flush took %d questions, %d over, the held one with %d hits", len(tk.questions), tk.questionsOver, hits)
	}
}
