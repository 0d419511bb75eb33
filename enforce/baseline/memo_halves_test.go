package baseline

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// rewriteMemo changes the body of the memo at path (its footer
// included) with change, and makes its checksum the changed body's: a
// memo whole by its checksum, as only its owner can write one.
func rewriteMemo(t *testing.T, path string, change func(body []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < memoHeader+memoFooter || string(b[:len(memoMagic)]) != memoMagic {
		t.Fatal("not a memo of this format")
	}
	head, body := b[:memoHeader], change(slices.Clone(b[memoHeader:]))
	binary.BigEndian.PutUint64(head[len(memoMagic)+8:], memoSum(head[len(memoMagic)+16:], body))
	if err := os.WriteFile(path, slices.Concat(head, body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// memoParts is where the parts of a memo's body start: its flows' first
// record (after the users and the flows' count), each flow's record
// (with its length and sum), the rules; and the footer's three numbers.
type memoParts struct {
	flows, rules int
	recs         [][2]int
	half         int
}

func partsOf(t *testing.T, body []byte) memoParts {
	t.Helper()
	m, _, _, err := decodeMemo(body, func(map[uint32]string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	foot := body[len(body)-memoFooter:]
	p := memoParts{half: int(binary.BigEndian.Uint64(foot)), rules: int(binary.BigEndian.Uint64(foot[16:]))}
	for _, rec := range m.recs {
		p.recs = append(p.recs, [2]int{int(rec[0]) - 4 - len(store.FlowSum{}), int(rec[1])})
	}
	p.flows = p.recs[0][0]
	if p.recs[p.half][0] != int(binary.BigEndian.Uint64(foot[8:])) || p.recs[len(p.recs)-1][1] != p.rules {
		t.Fatalf("the footer %x does not say where the parts start", foot)
	}
	return p
}

// setFooter sets the footer's number i (0: the first half's flows, 1:
// where the second half starts, 2: where the rules start).
func setFooter(body []byte, i int, v uint64) {
	binary.BigEndian.PutUint64(body[len(body)-memoFooter+8*i:], v)
}

// memoCase writes an export and its memo, and the next export, changed:
// the memo is used for it unless damaged.
func memoCase(t *testing.T, n int) (next, memoPath string, o plan.Options) {
	t.Helper()
	rng := rand.New(rand.NewPCG(31, uint64(n)))
	flows := memoFlows(rng, n+100)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.json")
	next, memoPath = filepath.Join(dir, "next.json"), filepath.Join(dir, "memo")
	o = memoOptions(plan.FollowBoth, "")
	writeMemoExport(t, base, flows[:n], true)
	memoPlan(t, base, memoPath, 1, o)
	writeMemoExport(t, next, slices.Concat(flows[:n/3], flows[n/3+50:n+100]), true)
	return next, memoPath, o
}

// TestMemoHalvesFooterDamaged: a memo whose footer (where its flows'
// second half and its rules start) is wrong, whole by its checksum, is
// refused: an offset that is not the boundary the records give, out of
// range, or a first half of another count. The export is read whole and
// the plan is the full path's (memoPlan).
func TestMemoHalvesFooterDamaged(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(p memoParts, body []byte)
	}{
		{"second half a byte late", func(p memoParts, b []byte) { setFooter(b, 1, uint64(p.recs[p.half][0]+1)) }},
		{"second half a byte early", func(p memoParts, b []byte) { setFooter(b, 1, uint64(p.recs[p.half][0]-1)) }},
		{"second half a record late", func(p memoParts, b []byte) { setFooter(b, 1, uint64(p.recs[p.half+1][0])) }},
		{"second half a record early", func(p memoParts, b []byte) { setFooter(b, 1, uint64(p.recs[p.half-1][0])) }},
		{"first half a flow more", func(p memoParts, b []byte) { setFooter(b, 0, uint64(p.half+1)) }},
		{"first half a flow less", func(p memoParts, b []byte) { setFooter(b, 0, uint64(p.half-1)) }},
		{"a record late and a flow more", func(p memoParts, b []byte) {
			setFooter(b, 0, uint64(p.half+1))
			setFooter(b, 1, uint64(p.recs[p.half+1][0]+1))
		}},
		{"first half past the flows", func(p memoParts, b []byte) { setFooter(b, 0, uint64(len(p.recs)+1)) }},
		{"first half huge", func(p memoParts, b []byte) { setFooter(b, 0, 1<<63) }},
		{"second half past the body", func(p memoParts, b []byte) { setFooter(b, 1, uint64(len(b)+100)) }},
		{"second half before the flows", func(p memoParts, b []byte) { setFooter(b, 1, uint64(p.flows-1)) }},
		{"second half at the flows", func(p memoParts, b []byte) { setFooter(b, 1, uint64(p.flows)) }},
		{"second half past the rules", func(p memoParts, b []byte) { setFooter(b, 1, uint64(p.rules+1)) }},
		{"rules a byte late", func(p memoParts, b []byte) { setFooter(b, 2, uint64(p.rules+1)) }},
		{"rules a byte early", func(p memoParts, b []byte) { setFooter(b, 2, uint64(p.rules-1)) }},
		{"rules past the body", func(p memoParts, b []byte) { setFooter(b, 2, uint64(len(b))) }},
		{"rules huge", func(p memoParts, b []byte) { setFooter(b, 2, 1<<64-1) }},
		{"a byte between the halves", nil},
		{"a byte between the flows and the rules", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			next, memoPath, o := memoCase(t, 1500)
			rewriteMemo(t, memoPath, func(body []byte) []byte {
				p := partsOf(t, body)
				if c.change != nil {
					c.change(p, body)
					return body
				}
				// A byte put in where a part starts, the footer saying
				// where the parts now start: the records are each read
				// right, but the memo is not one encodeMemo wrote.
				at2, at := p.recs[p.half][0], p.rules
				if strings.Contains(c.name, "halves") {
					at = at2
				} else {
					at2--
				}
				body = slices.Concat(body[:at], []byte{0}, body[at:])
				setFooter(body, 1, uint64(at2+1))
				setFooter(body, 2, uint64(p.rules+1))
				return body
			})
			r := memoPlan(t, next, memoPath, 1, o)
			if !strings.HasPrefix(r.Reason, "the memo of the export applied before: ") || r.Reused != 0 {
				t.Fatalf("reason %q (%d reused), want the memo refused", r.Reason, r.Reused)
			}
		})
	}
	// And the memo rewritten as it was is used: the checks above refuse
	// the footer, not the rewriting.
	next, memoPath, o := memoCase(t, 1500)
	rewriteMemo(t, memoPath, func(body []byte) []byte { return body })
	if r := memoPlan(t, next, memoPath, 1, o); r.Reason != "" || r.Reused < 1000 {
		t.Fatalf("reason %q (%d reused), want the memo used", r.Reason, r.Reused)
	}
}

// TestMemoKeyOrderAcrossHalves: a memo whose halves are each in key
// order, but not one after the other (its halves swapped, its footer
// saying where they now meet), is refused: the key order is checked
// where the halves meet too.
func TestMemoKeyOrderAcrossHalves(t *testing.T) {
	next, memoPath, o := memoCase(t, 1500)
	rewriteMemo(t, memoPath, func(body []byte) []byte {
		p := partsOf(t, body)
		at := p.recs[p.half][0]
		swapped := slices.Concat(body[:p.flows], body[at:p.rules], body[p.flows:at], body[p.rules:])
		setFooter(swapped, 0, uint64(len(p.recs)-p.half))
		setFooter(swapped, 1, uint64(p.flows+p.rules-at))
		return swapped
	})
	r := memoPlan(t, next, memoPath, 1, o)
	if want := "the memo of the export applied before: its flows' order"; r.Reason != want || r.Reused != 0 {
		t.Fatalf("reason %q (%d reused), want %q", r.Reason, r.Reused, want)
	}
}

// TestMemoOtherFormat: a memo of the format before the footer
// (egress-apply-memo/2) is refused, and says so.
func TestMemoOtherFormat(t *testing.T) {
	next, memoPath, o := memoCase(t, 300)
	b, err := os.ReadFile(memoPath)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, "egress-apply-memo/2\n")
	if err := os.WriteFile(memoPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := memoPlan(t, next, memoPath, 1, o)
	if want := "of another format than egress-apply-memo/3"; !strings.Contains(r.Reason, want) || r.Reused != 0 {
		t.Fatalf("reason %q (%d reused), want one saying %q", r.Reason, r.Reused, want)
	}
}

// TestMemoHalvesSmall: memos of 1, 2 and 3 flows (a first half of none
// or one flow) are read back and used.
func TestMemoHalvesSmall(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		rng := rand.New(rand.NewPCG(32, uint64(n)))
		var flows []store.Flow
		for len(flows) < n {
			f := memoFlows(rng, 1)[0]
			if kept(&f) && f.Proto == plan.ProtoTCP && f.Approved == 0 && f.Hits >= 3 && f.IP.Is4() && !f.IP.IsLoopback() && len(f.Hostnames) == 0 && !slices.ContainsFunc(flows, func(g store.Flow) bool { return g.FlowKey == f.FlowKey }) {
				flows = append(flows, f)
			}
		}
		dir := t.TempDir()
		path, memoPath := filepath.Join(dir, "export.json"), filepath.Join(dir, "memo")
		o := memoOptions("", "")
		writeMemoExport(t, path, flows, true)
		memoPlan(t, path, memoPath, 1, o)
		if r := memoPlan(t, path, memoPath, 1, o); r.Reason != "" || r.Reused != n {
			t.Fatalf("%d flows: reason %q, %d reused", n, r.Reason, r.Reused)
		}
	}
}
