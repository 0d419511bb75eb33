package dnsanswer

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/miekg/dns"
)

func TestParseQuestion(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("WwW.Example.COM.", dns.TypeAAAA)
	m.Id = 0xbeef
	m.SetEdns0(1232, false)
	query, _ := m.Pack()
	q, err := ParseQuestion(query)
	if err != nil {
		t.Fatal(err)
	}
	want := Question{ID: 0xbeef, Name: "www.example.com", QType: dns.TypeAAAA, QClass: dns.ClassINET}
	if q != want {
		t.Errorf("query: %+v, want %+v", q, want)
	}
	r := new(dns.Msg)
	r.SetReply(m)
	resp, _ := r.Pack()
	if q, err := ParseQuestion(resp); err != nil || !q.Response || q.Name != "www.example.com" {
		t.Errorf("response: %+v %v", q, err)
	}
	// Only the header and the question are needed.
	if _, err := ParseQuestion(query[:12+17+4]); err != nil {
		t.Errorf("header and question only: %v", err)
	}

	two := new(dns.Msg)
	two.Question = []dns.Question{m.Question[0], m.Question[0]}
	twoB, _ := two.Pack()
	none := new(dns.Msg)
	noneB, _ := none.Pack()
	for name, b := range map[string][]byte{
		"short":         query[:11],
		"cut name":      query[:16],
		"cut type":      query[:12+17+2],
		"two questions": twoB,
		"no question":   noneB,
		"bad label":     append(append([]byte{}, query[:12]...), 0x80, 0, 0, 1, 0, 1),
	} {
		if _, err := ParseQuestion(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := ParseQuestion(twoB); !errors.Is(err, ErrQuestionCount) {
		t.Errorf("two questions: %v", err)
	}
}

// TestParseQuestionNeverPanics feeds it random bytes and random cuts of a
// real message.
func TestParseQuestionNeverPanics(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	m := new(dns.Msg)
	m.SetQuestion("a.b.example.", dns.TypeA)
	base, _ := m.Pack()
	for range 20000 {
		b := make([]byte, r.IntN(80))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		if r.IntN(2) == 0 {
			b = append(append([]byte{}, base[:r.IntN(len(base)+1)]...), b...)
		}
		if _, err := ParseQuestion(b); errors.Is(err, errPanic) {
			t.Fatalf("panic on %x: %v", b, err)
		}
	}
}
