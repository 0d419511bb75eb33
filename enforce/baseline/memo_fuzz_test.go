package baseline

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// FuzzDecodeMemo decodes arbitrary memo bodies (the checksum is made
// beside the decoding, so the decoder reads damaged bytes too): it must
// not panic nor read past the body, and a body it accepts holds its
// flows in strictly increasing key order, each record inside the body.
func FuzzDecodeMemo(f *testing.F) {
	for _, n := range []int{0, 1, 3, 40} {
		dir := f.TempDir()
		export, memoPath := filepath.Join(dir, "export.json"), filepath.Join(dir, "memo")
		writeMemoExport(f, export, memoFlows(rand.New(rand.NewPCG(41, uint64(n))), n), true)
		o := memoOptions(plan.FollowBoth, "")
		r, err := ReadExportMemo(export, memoPath, 1, &o, func(string) {})
		if err != nil {
			f.Fatal(err)
		}
		if err := WriteMemo(memoPath, 1, r.Memo(plan.BuildWith(r.Merged.Flows, r.Plain, o))); err != nil {
			f.Fatal(err)
		}
		if b, err := os.ReadFile(memoPath); err == nil && len(b) > memoHeader {
			f.Add(b[memoHeader:])
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		calls := 0
		m, _, _, err := decodeMemo(body, func(map[uint32]string) string { calls++; return "" })
		if err != nil {
			return
		}
		if calls != 1 {
			t.Fatalf("the users were checked %d times", calls)
		}
		n := len(m.keys)
		if len(m.lens) != n || len(m.sums) != n || len(m.recs) != n || len(m.rules) != len(m.counts) {
			t.Fatalf("arrays of %d, %d, %d, %d flows; %d rules, %d counts", len(m.lens), len(m.sums), n, len(m.recs), len(m.rules), len(m.counts))
		}
		for i := range n {
			if rec := m.recs[i]; rec[0] < 0 || rec[0] > rec[1] || int(rec[1]) > len(m.body) {
				t.Fatalf("flow %d's record %v outside the body (%d bytes)", i, rec, len(m.body))
			}
			if i > 0 && m.keys[i-1].Compare(m.keys[i]) >= 0 {
				t.Fatalf("flows %d and %d out of key order", i-1, i)
			}
			m.element(i, new([]string))
			m.follow(i)
		}
	})
}
