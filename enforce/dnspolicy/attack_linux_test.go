//go:build linux

package dnspolicy

import (
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// Queries no honest client sends, each made to slip a name past the
// check. In enforce every one is stopped; a control shows the same
// server answers the honest form.

// rawQuery builds a query by hand: header counts, then body.
func rawQuery(flags, qd, an, ns, ar uint16, body ...byte) []byte {
	h := make([]byte, 12)
	binary.BigEndian.PutUint16(h[0:], 0x1234)
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint16(h[4:], qd)
	binary.BigEndian.PutUint16(h[6:], an)
	binary.BigEndian.PutUint16(h[8:], ns)
	binary.BigEndian.PutUint16(h[10:], ar)
	return append(h, body...)
}

// wire is a name in wire format from its labels.
func wire(labels ...string) []byte {
	var b []byte
	for _, l := range labels {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

var typeA = []byte{0, 1, 0, 1}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestEnforceStopsForgedQueries(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	// Controls: the honest query, in any case, passes.
	e.answered(alice, "udp", rawQuery(0x0100, 1, 0, 0, 0, cat(wire("www", "example", "lab"), typeA)...))
	e.answered(alice, "udp", rawQuery(0x0100, 1, 0, 0, 0, cat(wire("WwW", "ExAmPlE", "LAB"), typeA)...))

	cases := []struct {
		name string
		msg  []byte
	}{
		// "www" then a pointer to "example.lab" stored after the question:
		// the text could be made to read as an allowed name.
		{"compression pointer", rawQuery(0x0100, 1, 0, 0, 0,
			cat([]byte{3, 'w', 'w', 'w', 0xc0, 12 + 6 + 4}, typeA, wire("example", "lab"))...)},
		// One label "www.example" then "lab": reads www.example.lab in text.
		{"dot inside a label", rawQuery(0x0100, 1, 0, 0, 0, cat(wire("www.example", "lab"), typeA)...)},
		{"NUL inside a label", rawQuery(0x0100, 1, 0, 0, 0, cat(wire("www\x00x", "example", "lab"), typeA)...)},
		// An allowed question first, the data in a second one.
		{"two questions", rawQuery(0x0100, 2, 0, 0, 0, cat(wire("www", "example", "lab"), typeA, wire("x", "tunnel", "evil"), typeA)...)},
		{"an answer record in a query", rawQuery(0x0100, 1, 1, 0, 0, cat(wire("www", "example", "lab"), typeA,
			[]byte{0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 0, 0, 4, 'd', 'a', 't', 'a'})...)},
		{"authority records", rawQuery(0x0100, 1, 0, 1, 0, cat(wire("www", "example", "lab"), typeA)...)},
		{"two additional records", rawQuery(0x0100, 1, 0, 0, 2, cat(wire("www", "example", "lab"), typeA)...)},
		{"a response to port 53", rawQuery(0x8100, 1, 0, 0, 0, cat(wire("www", "example", "lab"), typeA)...)},
		{"an UPDATE", rawQuery(0x2800, 1, 0, 0, 0, cat(wire("www", "example", "lab"), typeA)...)},
		{"cut in the name", rawQuery(0x0100, 1, 0, 0, 0, 3, 'w', 'w', 'w', 7, 'e', 'x')},
		{"no qtype", rawQuery(0x0100, 1, 0, 0, 0, wire("www", "example", "lab")...)},
		{"reserved label type", rawQuery(0x0100, 1, 0, 0, 0, cat([]byte{0x41, 'x'}, wire("example", "lab"), typeA)...)},
		{"header only", rawQuery(0x0100, 1, 0, 0, 0)},
		{"over 253 characters", rawQuery(0x0100, 1, 0, 0, 0, cat(wire(long(63), long(63), long(63), long(60), "cdn", "lab"), typeA)...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.stoppedHelper(alice, "udp", c.msg)
			e.stoppedHelper(alice, "tcp", tcpFrame(c.msg))
		})
	}
}

func long(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}

// A burst of distinct base32 labels under one parent domain: every query
// is stopped and reported, and the summary names the parent.
func TestEnforceStopsATunnelBurst(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	const n = 200
	if _, err := e.helper(alice, "burst", "DP_PARENT=t.exfil.evil", "DP_N=200"); err != nil {
		t.Fatal(err)
	}
	lab.Await(t, "the burst's denials", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.denials) >= n
	})
	s := e.stats()
	if s.Denied < n || s.Lost != 0 {
		t.Fatalf("counters after the burst: %+v", s)
	}
	e.mu.Lock()
	sum := Summarize(Tally(e.denials), SummaryOptions{})
	e.mu.Unlock()
	if len(sum.Users) != 1 || sum.Users[0].UID != alice {
		t.Fatalf("summary: %+v", sum)
	}
	u := sum.Users[0]
	if u.Queries != n || u.Names != n || len(u.Parents) == 0 || u.Parents[0].Domain != "t.exfil.evil" || !u.Parents[0].Tunnel {
		t.Fatalf("alice: %+v", u)
	}
}

// An IPv6 destination options header (a user with CAP_NET_RAW sets one)
// puts itself between the IPv6 and the UDP header: the query is still
// found and judged.
func TestEnforceSeesPastIPv6ExtensionHeaders(t *testing.T) {
	e := newEnv(t, Enforce, learned...)
	before := e.stats()
	a := e.as(alice)
	a.Caps = []string{"net_raw"}
	err := a.Blocked(func() bool {
		s := e.stats()
		return s.Denied > before.Denied
	}, "env", "DP_HELPER=udp", "DP_EXTHDR=1", "DP_SERVER=["+lab.ServerIP6+"]:53", "DP_MSG="+hex.EncodeToString(query("x.tunnel.evil")), helperBin)
	if err != nil {
		t.Fatal(err)
	}
	e.denied(alice, "x.tunnel.evil", true)
}
