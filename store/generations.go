package store

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketGenerations  = []byte("generations")
	bucketPlans        = []byte("plans")
	bucketObservations = []byte("observations")
	bucketDenials      = []byte("denials")
)

// Generation states.
const (
	GenApplying   = "applying"    // recorded, the kernel not yet answered
	GenApplied    = "applied"     // installed
	GenPending    = "pending"     // installed, waiting for confirm
	GenConfirmed  = "confirmed"   // was pending, confirmed in time
	GenRolledBack = "rolled-back" // was pending (or applied), replaced by a rollback
	GenFailed     = "failed"      // the kernel refused it; nothing changed
)

// Generation is one table egress-enforce put into a namespace: every
// apply, rollback and removal adds one.
type Generation struct {
	N      uint64    `json:"n"`
	Time   time.Time `json:"time"`
	Target string    `json:"target"` // namespace path, "" for the host's
	Table  string    `json:"table"`
	Mode   string    `json:"mode"` // audit, enforce, staged or removed
	// Staged enforcement: enforced users (others audited), or audited
	// users (others enforced).
	EnforceUIDs []uint32 `json:"enforce_uids,omitempty"`
	AuditUIDs   []uint32 `json:"audit_uids,omitempty"`
	// EnforceServices or AuditServices: staged enforcement by service
	// (cgroup v2 paths).
	EnforceServices []string `json:"enforce_services,omitempty"`
	AuditServices   []string `json:"audit_services,omitempty"`
	Elements        int      `json:"elements"`
	Rules           int      `json:"rules"`
	Command         string   `json:"command"`
	Reason          string   `json:"reason,omitempty"`
	State           string   `json:"state"`
	// Restores is the generation whose plan this one re-applied (rollback).
	Restores uint64 `json:"restores,omitempty"`
	// PlanBase, when set, is the generation whose plan this one's stored
	// plan changes (a delta apply stores its plan as a patch of the plan
	// before); pruning keeps it as long as this plan is kept.
	PlanBase uint64 `json:"plan_base,omitempty"`
	// ApprovalsEpoch, when set, is the store's count of writes that
	// un-approved flows (meta/approvals_epoch) in the write that recorded
	// this generation with every flow of its plan approved (since v8):
	// while the count stays, those flows are all still approved.
	ApprovalsEpoch uint64 `json:"approvals_epoch,omitempty"`
	// For a pending generation: when it is rolled back unless confirmed
	// (the window starts when the kernel has the table), to which
	// generation (0: the table is removed), and the guard process (its pid
	// and the boot it runs in: after a reboot no guard is left).
	Deadline      time.Time     `json:"deadline,omitzero"`
	ConfirmWithin time.Duration `json:"confirm_within_ns,omitempty"`
	RollbackTo    uint64        `json:"rollback_to,omitempty"`
	GuardPID      int           `json:"guard_pid,omitempty"`
	GuardBoot     string        `json:"guard_boot,omitempty"`
	// Note says what happened to it later (confirmed, rolled back, why).
	Note    string    `json:"note,omitempty"`
	Updated time.Time `json:"updated"`
}

// Kept reports whether the generation took effect and stays: applied, or
// confirmed in time. Only a kept generation may be put back by a rollback
// or a restore.
func (g *Generation) Kept() bool {
	return g.State == GenApplied || g.State == GenConfirmed
}

// Effective is the generation whose plan this one installed.
func (g *Generation) Effective() uint64 {
	if g.Restores != 0 {
		return g.Restores
	}
	return g.N
}

func genKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// PackPlan compresses a plan as the store keeps it: gzip at its fastest
// level (the default level takes four times as long for a fifth less),
// written by klauspost/compress, whose fastest level packs a 100,000-flow
// plan of 27 MB in 45 ms instead of the standard library's 77 ms (a
// smaller result: 2.6 MB instead of 2.8); compress/gzip reads it.
func PackPlan(plan []byte) ([]byte, error) {
	k := NewPlanPacker(len(plan))
	_, _ = k.Write(plan) // an error stays: Packed gives it
	return k.Packed()
}

// AddGeneration records a new generation with its plan (any bytes; kept
// gzip-compressed; nil: none yet, see UpdateGenerationPlan) and returns
// it with its number.
func (s *Store) AddGeneration(g Generation, plan []byte) (Generation, error) {
	var packed []byte
	if plan != nil {
		var err error
		if packed, err = PackPlan(plan); err != nil {
			return g, err
		}
	}
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGenerations)
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		g.N = n
		if g.Time.IsZero() {
			g.Time = time.Now().UTC()
		}
		g.Updated = g.Time
		if packed != nil {
			if err := tx.Bucket(bucketPlans).Put(genKey(n), packed); err != nil {
				return err
			}
		}
		return putJSON(b, genKey(n), &g)
	})
	if err != nil {
		return g, fmt.Errorf("record generation: %w", err)
	}
	return g, nil
}

// ErrNoGeneration means there is no generation with that number.
var ErrNoGeneration = errors.New("no such generation")

// UpdateGeneration changes generation n in one transaction: fn sees the
// stored value and may change it, or return an error to leave it as it
// was. Two processes updating the same generation (confirm and the
// rollback guard) are serialized by the file lock.
func (s *Store) UpdateGeneration(n uint64, fn func(*Generation) error) (Generation, error) {
	return s.UpdateGenerationPlan(n, nil, fn)
}

// UpdateGenerationPlan is UpdateGeneration that also records the
// generation's plan, packed by PackPlan (nil: leave it), in the same
// transaction.
func (s *Store) UpdateGenerationPlan(n uint64, packed []byte, fn func(*Generation) error) (Generation, error) {
	var g Generation
	err := s.update(func(tx *bolt.Tx) error {
		return recordGenerationPlan(tx, n, packed, fn, &g)
	})
	return g, err
}

// recordGenerationPlan changes generation n in tx with fn (into g), and
// records its plan when packed is not nil.
func recordGenerationPlan(tx *bolt.Tx, n uint64, packed []byte, fn func(*Generation) error, g *Generation) error {
	b := tx.Bucket(bucketGenerations)
	ok, err := getJSON(b, genKey(n), g)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("generation %d: %w", n, ErrNoGeneration)
	}
	if err := fn(g); err != nil {
		return err
	}
	g.Updated = time.Now().UTC()
	if packed != nil {
		if err := tx.Bucket(bucketPlans).Put(genKey(n), packed); err != nil {
			return err
		}
	}
	return putJSON(b, genKey(n), g)
}

// Generations returns every generation, oldest first.
func (s *Store) Generations() ([]Generation, error) {
	return read(s, func(tx *bolt.Tx) ([]Generation, error) {
		var out []Generation
		err := each(tx, bucketGenerations, func(_ []byte, g *Generation) error {
			out = append(out, *g)
			return nil
		})
		return out, err
	})
}

// GenerationPlan returns the plan recorded with generation n.
func (s *Store) GenerationPlan(n uint64) ([]byte, error) {
	packed, err := read(s, func(tx *bolt.Tx) ([]byte, error) {
		b := tx.Bucket(bucketPlans)
		if b == nil {
			return nil, nil
		}
		return bytes.Clone(b.Get(genKey(n))), nil
	})
	if err != nil {
		return nil, err
	}
	if packed == nil {
		if err := s.view(func(tx *bolt.Tx) error { return planPruned(tx, n) }); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("plan of generation %d in %s: %w", n, s.path, ErrNoGeneration)
	}
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		return nil, fmt.Errorf("read plan of generation %d in %s: %w: %w", n, s.path, ErrCorrupt, err)
	}
	plan, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("read plan of generation %d in %s: %w: %w", n, s.path, ErrCorrupt, err)
	}
	return plan, nil
}

// Observation kinds: what the default rule did with a packet.
const (
	ObsDrop  = "drop"
	ObsAudit = "audit"
)

// Observation is traffic the allow-list did not cover, seen by the
// monitor: dropped (enforce) or only logged (audit).
type Observation struct {
	Kind string `json:"kind"`
	FlowKey
	Hits      uint64    `json:"hits"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Services are the services the packets came from, when the monitor
	// could tell (at most MaxServices; per-service rules).
	Services []string `json:"services,omitempty"`
}

// MaxServices bounds the services an observation names.
const MaxServices = 8

type obsRecord struct {
	Hits      uint64    `json:"hits"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Services  []string  `json:"services,omitempty"`
}

func obsKey(kind string, k FlowKey) []byte {
	return append([]byte{kind[0]}, k.bytes()...)
}

// DenialCount is how many packets the default rule logged in a minute.
type DenialCount struct {
	Drop  uint64 `json:"drop"`
	Audit uint64 `json:"audit"`
}

// AddObservations merges observations (as deltas) and per-minute counts
// (keyed by Unix minute) into the store in one transaction (see
// RecordObservations).
func (s *Store) AddObservations(obs []Observation, minutes map[int64]DenialCount) error {
	_, err := s.RecordObservations(&ObservationBatch{Observations: obs, Minutes: minutes})
	return err
}

// Observations returns what the monitor recorded, drops first.
func (s *Store) Observations() ([]Observation, error) {
	return read(s, func(tx *bolt.Tx) ([]Observation, error) {
		var out []Observation
		b := tx.Bucket(bucketObservations)
		if b == nil {
			return nil, nil
		}
		err := b.ForEach(func(k, v []byte) error {
			o, err := decodeObs(k, v)
			out = append(out, o)
			return err
		})
		return out, err
	})
}

// Denials returns the per-minute counts from one Unix minute to another
// (inclusive).
func (s *Store) Denials(from, to int64) (map[int64]DenialCount, error) {
	return read(s, func(tx *bolt.Tx) (map[int64]DenialCount, error) {
		out := map[int64]DenialCount{}
		b := tx.Bucket(bucketDenials)
		if b == nil {
			return out, nil
		}
		c := b.Cursor()
		for k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, uint64(from))); k != nil; k, _ = c.Next() {
			m := int64(binary.BigEndian.Uint64(k))
			if m > to {
				break
			}
			var dc DenialCount
			if _, err := getJSON(b, k, &dc); err != nil {
				return nil, err
			}
			out[m] = dc
		}
		return out, nil
	})
}
