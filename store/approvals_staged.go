package store

import (
	"bytes"
	"errors"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Many new flows at once (the first apply of a large export into a new
// store) are not put into the flows bucket in one transaction: bbolt
// keeps every key a transaction adds to one node in that node until the
// commit splits it, so a million new keys were one node grown by 1.25x
// steps and searched three times per key (2 s of CPU for a million
// approvals). They are staged instead: the flows as they will be (the
// stored ones and the approved ones, merged in key order) go into
// staging/flows, stageChunk keys per transaction, each appended to a tree
// the commit before split; the last transaction deletes flows, moves
// staging/flows in its place and records what goes with the approvals
// (the generation), so the approvals appear with it or not at all.
// Nobody writes between these transactions: the file stays open, and
// locked, from the first to the last. A staging bucket left by a crash is
// never read, and the next write of approvals deletes it.

var bucketStaging = []byte("staging")

var (
	// stageMin is the fewest keys for which approvals may be staged.
	stageMin = 200_000
	// stageChunk is how many keys a staging transaction writes.
	stageChunk = 65_536
)

type stepFunc = func(func(*bolt.Tx) error) error

// writeSteps writes the approvals through step (Store.updateSteps) and
// runs final in the transaction that makes them visible.
func (a *Approvals) writeSteps(step stepFunc, final func(*bolt.Tx) error) error {
	var st *stager
	err := step(func(tx *bolt.Tx) error {
		if err := dropStaging(tx); err != nil {
			return approvalsErr(err)
		}
		if !a.worthStaging(tx.Bucket(bucketFlows)) {
			if err := a.write(tx); err != nil {
				return approvalsErr(err)
			}
			return final(tx)
		}
		st = &stager{a: a}
		return approvalsErr(st.chunk(tx))
	})
	if err != nil || st == nil {
		return err
	}
	for !st.done && err == nil {
		err = step(func(tx *bolt.Tx) error { return approvalsErr(st.chunk(tx)) })
	}
	if err == nil {
		err = step(func(tx *bolt.Tx) error {
			if err := swapStaged(tx); err != nil {
				return approvalsErr(err)
			}
			return final(tx)
		})
	}
	if err != nil {
		// Best effort: the staged flows are not read, but take room.
		_ = step(dropStaging)
	}
	return err
}

// worthStaging reports whether most of the approvals are of flows the
// store does not have, and the store has few: a sample of the keys is
// looked up, then the stored flows counted (up to an eighth of the
// keys). A delta apply's approvals, of flows mostly approved, stop at the
// sample.
func (a *Approvals) worthStaging(flows *bolt.Bucket) bool {
	n := len(a.raw)
	if n < stageMin {
		return false
	}
	const samples = 64
	found := 0
	for i := range samples {
		if flows.Get(a.raw[i*(n-1)/(samples-1)]) != nil {
			found++
		}
	}
	if found*4 >= samples {
		return false
	}
	limit := n / 8
	c := flows.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if limit--; limit < 0 {
			return false
		}
	}
	return true
}

// stager writes the flows merged with the approvals into staging/flows,
// stageChunk keys a transaction.
type stager struct {
	a     *Approvals
	i     int    // the next key of a.raw
	after []byte // the last stored key passed (nil: none yet)
	begun bool   // staging/flows is made
	done  bool
	ap    approver
}

// chunk writes the next stageChunk keys into staging/flows (made by the
// first chunk).
func (st *stager) chunk(tx *bolt.Tx) error {
	sb, err := stagingFlows(tx, !st.begun)
	if err != nil {
		return err
	}
	st.begun = true
	sb.FillPercent = 0.9 // filled in key order, as the flows were
	c := tx.Bucket(bucketFlows).Cursor()
	k, v := c.First()
	if st.after != nil {
		if k, v = c.Seek(st.after); bytes.Equal(k, st.after) {
			k, v = c.Next()
		}
	}
	raw := st.a.raw
	for n := 0; n < stageChunk; n++ {
		for st.i > 0 && st.i < len(raw) && bytes.Equal(raw[st.i], raw[st.i-1]) {
			st.i++
		}
		var rk []byte
		if st.i < len(raw) {
			rk = raw[st.i]
		}
		order := 0
		switch {
		case k == nil && rk == nil:
			st.done = true
			return nil
		case k == nil:
			order = 1
		case rk != nil:
			order = bytes.Compare(k, rk)
		}
		key, value := k, v
		switch {
		case order < 0: // a stored flow the approvals leave
		case order == 0 && st.a.onlyNew && approvedRecord(v):
			st.i++
		default:
			stored := v
			if order > 0 {
				key, stored = rk, nil
			}
			if value, _, err = st.ap.record(rk, stored, st.a.fn); err != nil {
				return err
			}
			st.i++
		}
		if order <= 0 {
			st.after = append(st.after[:0], k...)
			k, v = c.Next()
		}
		if err := sb.Put(key, value); err != nil {
			return err
		}
	}
	return nil
}

// stagingFlows is staging/flows, made when create is set.
func stagingFlows(tx *bolt.Tx, create bool) (*bolt.Bucket, error) {
	if create {
		stg, err := tx.CreateBucket(bucketStaging)
		if err != nil {
			return nil, err
		}
		return stg.CreateBucket(bucketFlows)
	}
	if stg := tx.Bucket(bucketStaging); stg != nil {
		if sb := stg.Bucket(bucketFlows); sb != nil {
			return sb, nil
		}
	}
	return nil, errors.New("the staged flows are gone")
}

// swapStaged puts staging/flows in the place of flows.
func swapStaged(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bucketFlows); err != nil {
		return err
	}
	if err := tx.MoveBucket(bucketFlows, tx.Bucket(bucketStaging), nil); err != nil {
		return err
	}
	return tx.DeleteBucket(bucketStaging)
}

// dropStaging deletes a staging bucket left behind.
func dropStaging(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bucketStaging); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
		return err
	}
	return nil
}
