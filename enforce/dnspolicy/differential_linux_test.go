//go:build linux

package dnspolicy

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/egresskit/egress/bpf"
)

// refVerdict is what the kernel program should decide for a UDP query
// payload from uid 0, written plainly: 1 allowed, 0 stopped.
func refVerdict(msg []byte, entries []Entry) uint32 {
	if len(msg) < 17 {
		return 0
	}
	flags := binary.BigEndian.Uint16(msg[2:])
	if flags&0x8000 != 0 || (flags>>11)&0xf != 0 {
		return 0
	}
	if binary.BigEndian.Uint16(msg[4:]) != 1 || binary.BigEndian.Uint16(msg[6:]) != 0 ||
		binary.BigEndian.Uint16(msg[8:]) != 0 || binary.BigEndian.Uint16(msg[10:]) > 1 {
		return 0
	}
	var labels []string
	pos, text := 12, 0
	for {
		if pos >= len(msg) || pos >= QBUF {
			return 0
		}
		l := int(msg[pos])
		pos++
		if l == 0 {
			break
		}
		if l&0xc0 != 0 {
			return 0
		}
		if len(labels) > 0 {
			text++
		}
		if text+l > 253 || pos+l > len(msg) {
			return 0
		}
		lab := asciiLower(string(msg[pos : pos+l]))
		if strings.ContainsAny(lab, ".\x00") {
			return 0
		}
		labels = append(labels, lab)
		text += l
		pos += l
	}
	if pos+4 > len(msg) {
		return 0
	}
	if Matches(entries, 0, strings.Join(labels, ".")) {
		return 1
	}
	return 0
}

// QBUF is the kernel's copy of a message.
const QBUF = 512

// TestProgramAgreesWithReference: the kernel's parser and lookups against
// the plain Go reference, on queries mutated at random (bytes flipped,
// lengths changed, case changed, cut short), through BPF_PROG_TEST_RUN.
func TestProgramAgreesWithReference(t *testing.T) {
	entries, _ := Dedup([]Entry{
		{UID: 0, Name: "www.example.lab"}, {UID: 0, Name: "*.cdn.lab"}, {UID: AllUsers, Name: "*.a.b.c.d.e.f.g.h"},
		{UID: 0, Name: "x"}, {UID: 7, Name: "only.seven.lab"},
	})
	objs := loadForRun(t, Enforce, entries)
	bases := [][]byte{query("www.example.lab"), query("q.r.cdn.lab"), query("z.a.b.c.d.e.f.g.h"), query("y.z.a.b.c.d.e.f.g.h"),
		query("x"), query("only.seven.lab"), query("cdn.lab"), query(long(63) + "." + long(63) + "." + long(63) + "." + long(50) + ".cdn.lab")}
	r := rand.New(rand.NewPCG(18, 18))
	agreeWithReference(t, objs, entries, diffQueries(), func() []byte {
		msg := append([]byte(nil), bases[r.IntN(len(bases))]...)
		mutate(r, msg)
		if r.IntN(8) == 0 {
			msg = msg[:r.IntN(len(msg)+1)]
		}
		return msg
	})
}

// agreeWithReference runs n queries from next through the program and
// fails at the first verdict refVerdict does not share, or when one
// verdict has under a twentieth of them (the queries hardly test it).
func agreeWithReference(t *testing.T, objs *bpf.DnspolicyObjects, entries []Entry, n int, next func() []byte) {
	t.Helper()
	var byVerdict [2]int
	for i := range n {
		msg := next()
		want := refVerdict(msg, entries)
		got, _ := runProg(t, objs.DnsPolicy, ipv4UDP(53, msg), 1)
		if got != want {
			t.Fatalf("case %d: kernel %d, reference %d, message %x", i, got, want, msg)
		}
		byVerdict[got]++
	}
	t.Logf("%d verdicts agree: %d allowed, %d stopped", n, byVerdict[1], byVerdict[0])
	if byVerdict[0] < n/20 || byVerdict[1] < n/20 {
		t.Errorf("the queries hardly test one side: %v", byVerdict)
	}
}

// diffQueries is DP_DIFF_QUERIES (default 20000): the mutated queries
// TestProgramAgreesWithReference tries.
func diffQueries() int {
	if n, err := strconv.Atoi(os.Getenv("DP_DIFF_QUERIES")); err == nil && n > 0 {
		return n
	}
	return 20000
}

// mutate changes a few bytes of msg: case, a random byte, a label length.
func mutate(r *rand.Rand, msg []byte) {
	for range r.IntN(3) {
		i := r.IntN(len(msg))
		switch r.IntN(4) {
		case 0:
			if c := msg[i]; c >= 'a' && c <= 'z' {
				msg[i] = c - 32
			}
		case 1:
			msg[i] = byte(r.IntN(256))
		case 2:
			if i >= 12 {
				msg[i] = byte(r.IntN(70))
			}
		case 3:
			// leave it
		}
	}
}
