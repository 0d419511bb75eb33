package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Approvals are approvals of flows made ready before the write that
// records them (the keys put in the store's order): WriteApprovals
// writes them alone, UpdateGenerationPlanApproving in the transaction that
// records a generation applied.
type Approvals struct {
	raw     [][]byte // the stored keys, in order
	onlyNew bool     // fn sees no flow the store holds as approved
	fn      func(f *Flow)
}

// NewApprovals makes ready what ApproveNew(keys, fn) writes.
func NewApprovals(keys []FlowKey, fn func(f *Flow)) *Approvals {
	return &Approvals{raw: sortedKeys(keys), onlyNew: true, fn: fn}
}

// WriteApprovals writes a in a transaction of its own.
func (s *Store) WriteApprovals(a *Approvals) error {
	if err := s.update(a.write); err != nil {
		return fmt.Errorf("record approvals: %w", err)
	}
	return nil
}

// write applies the approvals in tx.
func (a *Approvals) write(tx *bolt.Tx) error {
	b := tx.Bucket(bucketFlows)
	// The keys go in in order: pages filled fuller split less (a new
	// store's first apply writes every flow).
	b.FillPercent = 0.9
	w := walker{c: b.Cursor()}
	// Keys past the last stored one are new: they are not looked up (a
	// new store's first apply looked a million keys up in the node they
	// were added to: 0.25 s).
	last, _ := w.c.Last()
	last = bytes.Clone(last)
	var ap approver
	for i, kb := range a.raw {
		if i > 0 && bytes.Equal(kb, a.raw[i-1]) {
			continue
		}
		var v []byte
		if last != nil && bytes.Compare(kb, last) <= 0 {
			v = w.get(kb)
		}
		if a.onlyNew && approvedRecord(v) {
			continue
		}
		if err := ap.set(b, kb, v, a.fn); err != nil {
			return err
		}
		w.moved() // a write invalidates the cursor
	}
	return nil
}

// UpdateGenerationPlanApproving is UpdateGenerationPlan that also writes
// approvals a in the same transaction: the generation is recorded with
// its approvals or not at all. (An apply saves a second write of the
// store: its wait, its commit and its syncs.) It is an ApprovingWrite
// committed at once.
func (s *Store) UpdateGenerationPlanApproving(n uint64, packed []byte, fn func(*Generation) error, a *Approvals) (Generation, error) {
	return s.BeginApprovingWrite(func() *Approvals { return a }).Commit(n, packed, fn)
}
