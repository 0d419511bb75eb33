// Package dnsanswer parses DNS response payloads, as captured by the eBPF
// program (the UDP payload of a packet from port 53, possibly cut short), into
// what the response says about IP addresses: every A and AAAA record of the
// answer section together with the names that lead to it through CNAME
// records.
//
// Parse is meant for untrusted input. It never panics, its loops are bounded
// by the number of bytes available rather than by the counts in the DNS
// header, and a copy that stops in the middle of the message yields the
// records that were complete, flagged as Partial.
package dnsanswer

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

const (
	headerLen = 12 // fixed DNS header
	qrBit     = 1 << 15

	// maxChainDepth caps how many CNAME hops are followed back from the
	// owner name of an address record.
	maxChainDepth = 16
	// maxNames caps the number of names reported for one address.
	maxNames = 32
	// maxNameWire is the longest domain name in wire format (RFC 1035 2.3.4).
	maxNameWire = 255
)

// Answer is what one DNS response says about addresses.
type Answer struct {
	ID       uint16
	Question string // first question name: lower-case, no trailing dot ("" if none)
	QType    uint16
	Rcode    int
	Partial  bool // the copy was shorter than the answer, or parsing stopped early; records up to that point are kept
	Addrs    []Addr
}

// Addr is one A or AAAA record with the names that lead to it.
//
// Names holds every name from which the record's owner name is reachable by
// following CNAME records of the same message, the owner name included. The
// question name comes first when it is among them; the others follow ordered
// from the farthest to the nearest, so a plain chain reads from the question
// name to the owner name. At most 16 CNAME hops are followed and at most 32
// names are reported.
type Addr struct {
	IP    netip.Addr // IPv4 as a 4-byte address (never v4-mapped)
	Names []string   // lower-case, no trailing dot, deduplicated; see above
	TTL   uint32     // TTL of the A/AAAA record
}

// ErrNotResponse is returned by Parse for a message whose QR bit is clear.
var ErrNotResponse = errors.New("not a DNS response")

// errPanic marks an error made from a recovered panic. It should never be
// seen; the fuzz test fails if it is.
var errPanic = errors.New("internal panic")

// Parse parses payload, the first bytes of a DNS message whose full length is
// origLen (origLen >= len(payload); pass len(payload) if unknown).
//
// A payload shorter than the DNS header, or whose question section is
// malformed (as opposed to cut short), is an error; a query is
// ErrNotResponse. Otherwise Parse returns an Answer, with Partial set if the
// payload is shorter than origLen, if the message ends before the header
// counts say it should, or if a record could not be decoded; in the last case
// the answer records before the bad one are kept.
func Parse(payload []byte, origLen int) (a *Answer, err error) {
	defer func() {
		if r := recover(); r != nil {
			a, err = nil, fmt.Errorf("parse dns answer: %w: %v", errPanic, r)
		}
	}()

	if len(payload) < headerLen {
		return nil, fmt.Errorf("parse dns answer: message too short: %d bytes, header needs %d", len(payload), headerLen)
	}
	flags := binary.BigEndian.Uint16(payload[2:])
	if flags&qrBit == 0 {
		return nil, ErrNotResponse
	}
	qdcount := int(binary.BigEndian.Uint16(payload[4:]))
	ancount := int(binary.BigEndian.Uint16(payload[6:]))
	nscount := int(binary.BigEndian.Uint16(payload[8:]))
	arcount := int(binary.BigEndian.Uint16(payload[10:]))

	a = &Answer{
		ID:      binary.BigEndian.Uint16(payload[0:]),
		Rcode:   int(flags & 0xF),
		Partial: len(payload) < origLen,
	}

	off, complete, err := parseQuestions(payload, qdcount, a)
	if err != nil {
		return nil, err
	}

	var rrs []dns.RR
	m := new(dns.Msg)
	if uerr := m.Unpack(payload); uerr == nil {
		// Unpack succeeds quietly when the message ends on a record (or
		// question name) boundary before the header counts are used up, so
		// compare the counts.
		rrs = m.Answer
		a.Rcode = m.Rcode // includes the EDNS extended rcode
		if !complete || len(m.Answer) < ancount || len(m.Ns) < nscount || len(m.Extra) < arcount {
			a.Partial = true
		}
	} else {
		// Unpack drops a whole section when one record of it fails; read the
		// answer section record by record instead.
		a.Partial = true
		if complete {
			rrs = lenientAnswers(payload, off, ancount)
		}
	}
	a.Addrs = collect(rrs, a.Question)
	return a, nil
}

// parseQuestions decodes the question section starting right after the header
// and records the first question in a. It returns the offset after the
// section and whether the section was complete. A question cut short by the
// end of payload makes the section incomplete; a malformed one is an error.
func parseQuestions(payload []byte, qdcount int, a *Answer) (off int, complete bool, err error) {
	off = headerLen
	// Each question takes at least 5 bytes, so the loop ends when the bytes
	// run out whatever qdcount claims.
	for i := range qdcount {
		if off >= len(payload) {
			return off, false, nil
		}
		name, next, err := dns.UnpackDomainName(payload, off)
		if err != nil {
			if cutShort(payload, off) {
				return off, false, nil
			}
			return off, false, fmt.Errorf("parse dns answer: question %d: %w", i+1, err)
		}
		if i == 0 {
			a.Question = normalize(name)
		}
		if next+4 > len(payload) {
			return next, false, nil
		}
		if i == 0 {
			a.QType = binary.BigEndian.Uint16(payload[next:])
		}
		off = next + 4
	}
	return off, true, nil
}

// cutShort reports whether the wire-format name at off runs past the end of
// msg, that is whether its own labels (before any compression pointer) are cut
// off, as opposed to being malformed.
func cutShort(msg []byte, off int) bool {
	budget := maxNameWire
	for {
		if off >= len(msg) {
			return true
		}
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return false
			}
			budget -= c + 1
			if budget <= 0 {
				return false // too long: malformed
			}
			off += 1 + c
		case 0xC0:
			return off+2 > len(msg)
		default:
			return false // reserved label type: malformed
		}
	}
}

// lenientAnswers decodes up to count answer records starting at off, stopping
// at the first one that fails or at the end of msg. Only A, AAAA and CNAME
// records are kept.
func lenientAnswers(msg []byte, off, count int) []dns.RR {
	var rrs []dns.RR
	for i := 0; i < count && off < len(msg); i++ {
		rr, next, err := dns.UnpackRR(msg, off)
		if err != nil || next <= off {
			break
		}
		off = next
		switch rr.(type) {
		case *dns.A, *dns.AAAA, *dns.CNAME:
			rrs = append(rrs, rr)
		}
	}
	return rrs
}

// collect turns the answer records into addresses with their names.
func collect(rrs []dns.RR, question string) []Addr {
	// Reverse CNAME graph: target -> owners, deduplicated, in message order.
	parents := make(map[string][]string)
	edges := make(map[[2]string]struct{})
	for _, rr := range rrs {
		c, ok := rr.(*dns.CNAME)
		if !ok || c.Hdr.Class != dns.ClassINET || c.Target == "" {
			continue
		}
		from, to := normalize(c.Hdr.Name), normalize(c.Target)
		if from == to {
			continue
		}
		e := [2]string{from, to}
		if _, dup := edges[e]; dup {
			continue
		}
		edges[e] = struct{}{}
		parents[to] = append(parents[to], from)
	}

	var addrs []Addr
	cache := make(map[string][]string)
	for _, rr := range rrs {
		h := rr.Header()
		if h.Class != dns.ClassINET {
			continue
		}
		var ip netip.Addr
		switch r := rr.(type) {
		case *dns.A:
			if len(r.A) != 4 {
				continue // empty rdata
			}
			ip = netip.AddrFrom4([4]byte(r.A))
		case *dns.AAAA:
			if len(r.AAAA) != 16 {
				continue
			}
			// An IPv4-mapped AAAA reaches the IPv4 address.
			ip = netip.AddrFrom16([16]byte(r.AAAA)).Unmap()
		default:
			continue
		}
		owner := normalize(h.Name)
		names, ok := cache[owner]
		if !ok {
			names = chainNames(owner, question, parents)
			cache[owner] = names
		}
		addrs = append(addrs, Addr{IP: ip, Names: slices.Clone(names), TTL: h.Ttl})
	}
	return addrs
}

// chainNames returns the names from which owner is reachable through the CNAME
// graph given as parents (target -> owners), owner included: the question
// first if present, then the farthest to the nearest.
func chainNames(owner, question string, parents map[string][]string) []string {
	type node struct {
		name  string
		depth int
	}
	seen := map[string]bool{owner: true}
	found := []node{{owner, 0}}
	// Breadth-first back along the CNAMEs. Each parents list is
	// deduplicated, so a node costs at most maxNames skips plus its appends.
	for i := 0; i < len(found) && len(found) < maxNames; i++ {
		n := found[i]
		if n.depth >= maxChainDepth {
			continue
		}
		for _, p := range parents[n.name] {
			if seen[p] {
				continue
			}
			seen[p] = true
			found = append(found, node{p, n.depth + 1})
			if len(found) >= maxNames {
				break
			}
		}
	}
	slices.SortStableFunc(found, func(x, y node) int { return cmp.Compare(y.depth, x.depth) })

	names := make([]string, 0, len(found))
	if seen[question] {
		names = append(names, question)
	}
	for _, n := range found {
		if n.name != question {
			names = append(names, n.name)
		}
	}
	return names
}

// normalize turns a presentation-format name from miekg/dns ("Example.COM.")
// into the form used in Answer ("example.com"). miekg/dns escapes every byte
// outside printable ASCII, so ASCII lower-casing is enough.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
