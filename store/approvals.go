package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Approvals are approvals of flows made ready before the write that
// records them (the keys put in the store's order): WriteApprovals
// writes them alone, UpdateGenerationPlanApproving in the transaction that
// records a generation applied.
type Approvals struct {
	raw     [][]byte // the stored keys, in order
	flat    []byte   // or these, flowKeyLen bytes each (when raw is nil)
	onlyNew bool     // fn sees no flow the store holds as approved
	fn      func(f *Flow)
	// ofPlan: these approve every flow of the plan of the generation
	// whose write records them (OfPlan).
	ofPlan bool
	// With whole (NewApprovalsAfter): the keys are those a plan added
	// to the plan of generation base; whole gives the plan's approvals,
	// written instead when base's flows are not known to be approved.
	base  uint64
	whole func() *Approvals
}

// OfPlan says that a approves (its function leaves approved) every flow
// of the plan of the generation a write records it with
// (BeginApprovingWrite, UpdateGenerationPlanApproving): the generation
// then keeps the store's count of un-approving writes, and the
// approvals of a plan made from its plan may look up only the flows
// that plan added (NewApprovalsAfter). It returns a.
func (a *Approvals) OfPlan() *Approvals {
	a.ofPlan = true
	return a
}

// NewApprovalsAfter are the approvals of a plan made from the plan of
// generation base by adding flows (and removing others): when base was
// recorded with every flow of its plan approved and no write un-approved
// a flow since (in the transaction that writes them: nothing can come
// between), the flows the plan kept are all approved, and only added are
// looked up (fn approving those not approved yet, as NewApprovals); else
// whole gives the plan's approvals, which are written instead. (A delta
// apply of 100k flows looked up 100k keys after the kernel's work: 10-30
// ms.) added must hold every key of the plan that base's plan does not,
// and whole must be OfPlan; the approvals are the plan's (OfPlan).
func NewApprovalsAfter(base uint64, added []FlowKey, fn func(f *Flow), whole func() *Approvals) *Approvals {
	a := NewApprovals(added, fn).OfPlan()
	a.base, a.whole = base, whole
	return a
}

// NewApprovals makes ready what ApproveNew(keys, fn) writes.
func NewApprovals(keys []FlowKey, fn func(f *Flow)) *Approvals {
	return &Approvals{raw: sortedKeys(keys), onlyNew: true, fn: fn}
}

// KeyRun is a run of n flow keys in the order FlowKey.Compare gives
// (a set of a plan: one family), key(i) the i-th.
type KeyRun struct {
	N   int
	Key func(i int) FlowKey
}

// NewApprovalsOfRuns makes ready what NewApprovals makes ready for the
// keys of runs: their stored forms are written straight into one buffer,
// merged in the store's order (no slice of the keys and of their stored
// forms, then merged into a third: 10 MB at 100k keys, ~2.5k page faults
// of fresh memory). The store orders a UID's keys by protocol first: when
// a run is not in its order, the run's keys of each protocol are merged
// as runs of their own (a plan with TCP and UDP flows of one UID: its
// 100k keys were sorted, ~30 ms); a run in no order is sorted as
// NewApprovals sorts it.
func NewApprovalsOfRuns(runs []KeyRun, fn func(f *Flow)) *Approvals {
	if flat, ok := mergeRuns(runs); ok {
		return &Approvals{flat: flat, onlyNew: true, fn: fn}
	}
	// A run's keys of one protocol are in the store's order: merged
	// with the others' of every protocol.
	if flat, ok := mergeRuns(byProto(runs)); ok {
		return &Approvals{flat: flat, onlyNew: true, fn: fn}
	}
	var keys []FlowKey
	for _, r := range runs {
		for i := range r.N {
			keys = append(keys, r.Key(i))
		}
	}
	return NewApprovals(keys, fn)
}

// byProto splits each run into runs of one protocol each.
func byProto(runs []KeyRun) []KeyRun {
	var out []KeyRun
	for _, r := range runs {
		var protos []uint8
		var at [][]int32
		for i := range r.N {
			p := r.Key(i).Proto
			j := slices.Index(protos, p)
			if j < 0 {
				j, protos, at = len(protos), append(protos, p), append(at, nil)
			}
			at[j] = append(at[j], int32(i))
		}
		for _, idx := range at {
			out = append(out, KeyRun{N: len(idx), Key: func(i int) FlowKey { return r.Key(int(idx[i])) }})
		}
	}
	return out
}

// mergeRuns merges the stored forms of the runs' keys into one buffer in
// the store's order; false when a run is not in that order.
func mergeRuns(runs []KeyRun) ([]byte, bool) {
	n := 0
	for _, r := range runs {
		n += r.N
	}
	flat := make([]byte, n*flowKeyLen)
	at := make([]int, len(runs))
	heads := make([][flowKeyLen]byte, len(runs))
	for j, r := range runs {
		if r.N > 0 {
			r.Key(0).put(heads[j][:])
		}
	}
	for o := 0; o < len(flat); o += flowKeyLen {
		best := -1
		for j, r := range runs {
			if at[j] < r.N && (best < 0 || bytes.Compare(heads[j][:], heads[best][:]) < 0) {
				best = j
			}
		}
		copy(flat[o:], heads[best][:])
		if at[best]++; at[best] < runs[best].N {
			runs[best].Key(at[best]).put(heads[best][:])
			if bytes.Compare(heads[best][:], flat[o:o+flowKeyLen]) < 0 {
				return nil, false
			}
		}
	}
	return flat, true
}

// len is how many keys a has (repeats counted).
func (a *Approvals) len() int {
	if a.raw != nil {
		return len(a.raw)
	}
	return len(a.flat) / flowKeyLen
}

// key is a's stored key i.
func (a *Approvals) key(i int) []byte {
	if a.raw != nil {
		return a.raw[i]
	}
	return a.flat[i*flowKeyLen : (i+1)*flowKeyLen : (i+1)*flowKeyLen]
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
	if a.whole != nil && !planStillApproved(tx, a.base) {
		w := a.whole()
		if w == nil || !w.ofPlan || w.whole != nil {
			return errors.New("the approvals of a plan to write whole are not of a plan")
		}
		return w.write(tx)
	}
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
	var prev []byte
	for i := range a.len() {
		kb := a.key(i)
		if i > 0 && bytes.Equal(kb, prev) {
			continue
		}
		prev = kb
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
	if ap.unapproved > 0 {
		return bumpApprovalsEpoch(tx)
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
