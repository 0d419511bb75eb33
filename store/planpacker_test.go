package store

import (
	"bytes"
	"testing"
)

// TestPlanPackerIsPackPlan: a plan packed in pieces of any size reads
// back (compress/gzip) to the plan, as PackPlan's does, about as small.
func TestPlanPackerIsPackPlan(t *testing.T) {
	plan := planJSON20k()
	whole, err := PackPlan(plan)
	if err != nil {
		t.Fatal(err)
	}
	for _, piece := range []int{1, 100, 4096, 1 << 20, len(plan)} {
		k := NewPlanPacker(len(plan))
		for rest := plan; len(rest) > 0; {
			n := min(piece, len(rest))
			if _, err := k.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		packed, err := k.Packed()
		if err != nil {
			t.Fatal(err)
		}
		back, err := gunzip(packed)
		if err != nil || !bytes.Equal(back, plan) {
			t.Fatalf("pieces of %d: read back %d bytes (%v), want the %d packed", piece, len(back), err, len(plan))
		}
		if len(packed) > len(whole)*11/10+64 {
			t.Errorf("pieces of %d: packed into %d bytes, PackPlan into %d", piece, len(packed), len(whole))
		}
	}
	packed, err := NewPlanPacker(0).Packed()
	if err != nil {
		t.Fatal(err)
	}
	if back, err := gunzip(packed); err != nil || len(back) != 0 {
		t.Errorf("an empty plan read back as %d bytes (%v)", len(back), err)
	}
}
