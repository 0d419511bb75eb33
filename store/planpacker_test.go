package store

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"testing"
)

// TestPlanPackerIsPackPlan: a plan packed in pieces of any size reads
// back (compress/gzip) to the plan, as PackPlan's does, about as small.
func TestPlanPackerIsPackPlan(t *testing.T) {
	var plan bytes.Buffer
	plan.WriteString(`{"table":"egress","sets":[{"elements":[`)
	for i := range 20000 {
		fmt.Fprintf(&plan, `{"uid":1000,"ip":"11.0.%d.%d","proto":6,"port":443,"comment":"hits %d, last 2026-11-30, svc%d.example.net"},`, i/256%256, i%256, i*7, i)
	}
	plan.WriteString(`]}]}`)
	whole, err := PackPlan(plan.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, piece := range []int{1, 100, 4096, 1 << 20, plan.Len()} {
		k := NewPlanPacker(plan.Len())
		for rest := plan.Bytes(); len(rest) > 0; {
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
		zr, err := gzip.NewReader(bytes.NewReader(packed))
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(back, plan.Bytes()) {
			t.Fatalf("pieces of %d: read back %d bytes (%v), want the %d packed", piece, len(back), err, plan.Len())
		}
		if len(packed) > len(whole)*11/10+64 {
			t.Errorf("pieces of %d: packed into %d bytes, PackPlan into %d", piece, len(packed), len(whole))
		}
	}
	packed, err := NewPlanPacker(0).Packed()
	if err != nil {
		t.Fatal(err)
	}
	if zr, err := gzip.NewReader(bytes.NewReader(packed)); err != nil {
		t.Fatal(err)
	} else if back, err := io.ReadAll(zr); err != nil || len(back) != 0 {
		t.Errorf("an empty plan read back as %d bytes (%v)", len(back), err)
	}
}
