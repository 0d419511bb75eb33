package store

import (
	"bytes"

	kgzip "github.com/klauspost/compress/gzip"
)

// PlanPacker packs a plan given in pieces (gzip at its fastest level;
// compress/gzip reads it back to the pieces joined), so that the plan
// need not be whole in memory; PackPlan is a plan packed in one piece.
type PlanPacker struct {
	buf bytes.Buffer
	zw  *kgzip.Writer
	err error
}

// NewPlanPacker starts packing a plan of about size bytes.
func NewPlanPacker(size int) *PlanPacker {
	k := &PlanPacker{}
	k.buf.Grow(size/8 + 4096)
	k.zw, k.err = kgzip.NewWriterLevel(&k.buf, kgzip.BestSpeed)
	return k
}

// Write packs the next piece of the plan.
func (k *PlanPacker) Write(piece []byte) (int, error) {
	if k.err != nil {
		return 0, k.err
	}
	n, err := k.zw.Write(piece)
	k.err = err
	return n, err
}

// Packed ends the plan and gives it packed.
func (k *PlanPacker) Packed() ([]byte, error) {
	if k.err != nil {
		return nil, k.err
	}
	if k.err = k.zw.Close(); k.err != nil {
		return nil, k.err
	}
	return k.buf.Bytes(), nil
}
