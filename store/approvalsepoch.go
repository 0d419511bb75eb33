package store

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// keyApprovalsEpoch (meta/approvals_epoch, since v8) counts the writes that
// un-approved a flow: 8 bytes, big endian, 1 in a new or migrated file. A
// generation recorded in the write that approved every flow of its plan
// keeps the count of then (Generation.ApprovalsEpoch); while the count is
// the same, none of those flows was un-approved since, so the approvals
// of a plan made from that one need only look up the flows it added
// (NewApprovalsAfter), not every flow of the plan. Flows are never
// deleted (Retention); the one writer that changes a stored flow's
// approval is approver.set, which counts what it un-approves.
var keyApprovalsEpoch = []byte("approvals_epoch")

// approvalsEpoch is the count in tx (0: none, a file older than v8).
func approvalsEpoch(tx *bolt.Tx) uint64 {
	if m := tx.Bucket(bucketMeta); m != nil {
		if v := m.Get(keyApprovalsEpoch); len(v) == 8 {
			return binary.BigEndian.Uint64(v)
		}
	}
	return 0
}

// bumpApprovalsEpoch counts a write that un-approved flows.
func bumpApprovalsEpoch(tx *bolt.Tx) error {
	return tx.Bucket(bucketMeta).Put(keyApprovalsEpoch, binary.BigEndian.AppendUint64(nil, approvalsEpoch(tx)+1))
}

// planStillApproved reports whether every flow of generation n's plan is
// approved in tx: n was recorded with them all approved, and nothing
// un-approved a flow since. False when that is not known.
func planStillApproved(tx *bolt.Tx, n uint64) bool {
	b := tx.Bucket(bucketGenerations)
	if b == nil {
		return false
	}
	var g Generation
	if ok, err := getJSON(b, genKey(n), &g); err != nil || !ok {
		return false
	}
	return g.ApprovalsEpoch != 0 && g.ApprovalsEpoch == approvalsEpoch(tx)
}
