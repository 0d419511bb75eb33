package store

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"testing"
)

// TestPackPlanIsGzip: a packed plan is a gzip stream the standard
// library reads back to the same bytes (plans of older versions, packed
// by compress/gzip, and the new ones read the same way), smaller than
// the plan; the store gives back what it was given.
func TestPackPlanIsGzip(t *testing.T) {
	plan := planJSON20k()
	for _, data := range [][]byte{plan, {}, []byte("x")} {
		packed, err := PackPlan(data)
		if err != nil {
			t.Fatal(err)
		}
		back, err := gunzip(packed)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("read back %d bytes (%v), want the %d packed", len(back), err, len(data))
		}
		if len(data) > 1000 && len(packed) > len(data)/4 {
			t.Errorf("packed %d bytes into %d", len(data), len(packed))
		}
	}
	s := newStore(t)
	g, err := s.AddGeneration(Generation{}, plan)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GenerationPlan(g.N); err != nil || !bytes.Equal(got, plan) {
		t.Errorf("the store gave back %d bytes (%v), want the %d it was given", len(got), err, len(plan))
	}
}

// planJSON20k is a plan's JSON with 20,000 elements, as a plan's packing
// sees one.
func planJSON20k() []byte {
	var plan bytes.Buffer
	plan.WriteString(`{"table":"egress","sets":[{"elements":[`)
	for i := range 20000 {
		fmt.Fprintf(&plan, `{"uid":1000,"ip":"11.0.%d.%d","proto":6,"port":443,"comment":"hits %d, last 2026-11-30, svc%d.example.net"},`, i/256%256, i%256, i*7, i)
	}
	plan.WriteString(`]}]}`)
	return plan.Bytes()
}

// gunzip reads a packed plan back as compress/gzip does.
func gunzip(packed []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}
