package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The monitor's runs. A period no run of "egress-enforce watch" covers is
// a period without evidence: nothing logged then was recorded. promote
// reads them to tell "no audited packet" from "nobody was listening".

var bucketWatches = []byte("watches")

// MaxWatches bounds the watch runs kept: past it, the oldest go (a watch
// that restarts in a loop must not grow the store). A period whose run is
// gone is a period without monitor data, the safe reading.
const MaxWatches = 10_000

// maxWatches is MaxWatches (a variable: tests lower it).
var maxWatches uint64 = MaxWatches

// Watch is one run of the monitor: from the moment its NFLOG subscription
// was in place (Start) to its last flush (End), everything the default
// rules logged in Target on Group was recorded, except what the counts
// below say was not.
type Watch struct {
	ID     uint64    `json:"id"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Target string    `json:"target"` // namespace path, "" for the host's
	Group  uint16    `json:"group"`
	// Unrecorded are logged packets of this run whose destination (and
	// user) the store does not hold: past the monitor's bound between
	// flushes, or the observations' bound.
	Unrecorded Unrecorded `json:"unrecorded"`
	// LostLogs are NFLOG messages lost (gaps in their sequence numbers,
	// and socket errors): packets of no known user.
	LostLogs uint64 `json:"lost_logs"`
	// UnloggedAudit and UnloggedDrop are packets the kernel's counters
	// saw the default rules take that the log's rate limit kept out of
	// the log, while this run read the counters.
	UnloggedAudit uint64 `json:"unlogged_audit"`
	UnloggedDrop  uint64 `json:"unlogged_drop"`
	// Counters: every read of the kernel's counters during the run
	// succeeded (false: the unlogged packets are not known).
	Counters bool `json:"counters"`
	Finished bool `json:"finished"`
}

func watchKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// putWatch records w in tx: a new run (ID 0) gets its number; a known
// one is updated. unrecorded is added to what the run already left
// unrecorded. It returns the run's number.
func putWatch(tx *bolt.Tx, w *Watch, unrecorded Unrecorded) (uint64, error) {
	b, err := bucket(tx, bucketWatches)
	if err != nil {
		return 0, err
	}
	rec := *w
	if rec.ID == 0 {
		if rec.ID, err = b.NextSequence(); err != nil {
			return 0, err
		}
		if err := trimWatches(b, rec.ID); err != nil {
			return 0, err
		}
	} else {
		var old Watch
		found, err := getJSON(b, watchKey(rec.ID), &old)
		if err != nil {
			return 0, err
		}
		if found {
			rec.Start, rec.Unrecorded = old.Start, old.Unrecorded
		}
	}
	rec.Unrecorded = rec.Unrecorded.Plus(unrecorded)
	return rec.ID, putJSON(b, watchKey(rec.ID), &rec)
}

// trimWatches deletes the oldest runs until a new run numbered id fits
// in MaxWatches.
func trimWatches(b *bolt.Bucket, id uint64) error {
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(k) == 8 && id-binary.BigEndian.Uint64(k) >= maxWatches; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Watches returns the monitor's runs, oldest first. A store of an older
// schema, not migrated yet, has none.
func (s *Store) Watches() ([]Watch, error) {
	return read(s, func(tx *bolt.Tx) ([]Watch, error) {
		out := []Watch{}
		b := tx.Bucket(bucketWatches)
		if b == nil {
			return out, nil
		}
		err := b.ForEach(func(k, v []byte) error {
			var w Watch
			if err := jsonUnmarshal(k, v, &w); err != nil {
				return err
			}
			out = append(out, w)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read watches: %w", err)
		}
		return out, nil
	})
}
