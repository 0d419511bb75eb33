package store

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bounds and retention. The monitor's records would otherwise grow with
// every distinct destination denied and every minute, and each generation
// keeps a plan as large as the allow-list: a store that is never pruned
// grows for as long as the host runs.
//
//   - observations hold at most Options.MaxObservations destinations; a
//     new one past the bound takes the place of a lighter one or is left
//     out, and either way its packets are counted in meta/obs_unrecorded;
//   - Prune deletes observations not seen, per-minute denials older than,
//     and learning runs that ended before the retention;
//   - Prune keeps the plans of the newest KeepGenerations generations (and
//     the ones KeepPlans names: what a restore or rollback needs) and
//     replaces the others by a summary in plan_summaries/.

var (
	bucketPlanSummaries = []byte("plan_summaries")
	keyUnrecorded       = []byte("obs_unrecorded")
)

// Defaults of the bounds.
const (
	DefaultRetention       = 90 * 24 * time.Hour
	DefaultKeepGenerations = 50
	DefaultMaxObservations = 20_000
)

// pruneChunk bounds the records one prune transaction deletes, so that a
// reader never waits long for the file lock.
const pruneChunk = 5000

// planChunk bounds the plans one transaction summarizes (each one is
// decompressed to be hashed).
const planChunk = 20

// Unrecorded counts what the store holds no destination for: packets the
// monitor counted whose destination it could not keep between two flushes,
// or that the observations' bound left out.
type Unrecorded struct {
	Drop  uint64 `json:"drop"`
	Audit uint64 `json:"audit"`
	// Records is how many observations were left out or evicted.
	Records uint64 `json:"records"`
}

// Add counts one left-out observation of kind with its packets.
func (u *Unrecorded) Add(kind string, hits uint64) {
	if kind == ObsDrop {
		u.Drop += hits
	} else {
		u.Audit += hits
	}
	u.Records++
}

// IsZero reports whether nothing was left out.
func (u Unrecorded) IsZero() bool { return u == Unrecorded{} }

// Plus is u and v added up.
func (u Unrecorded) Plus(v Unrecorded) Unrecorded {
	return Unrecorded{Drop: u.Drop + v.Drop, Audit: u.Audit + v.Audit, Records: u.Records + v.Records}
}

// ObservationBatch is what the monitor gathered since its last flush.
type ObservationBatch struct {
	Observations []Observation
	// Minutes are the logged packets per Unix minute (exact).
	Minutes map[int64]DenialCount
	// Unrecorded are packets the monitor could not attribute.
	Unrecorded Unrecorded
	// Watch, when set, is the monitor's run, recorded in the same
	// transaction: what it logged until Watch.End is in the store. A run
	// with ID 0 is new: RecordObservations gives it its number.
	Watch *Watch
}

// RecordObservations merges a batch into the store in one transaction and
// returns what the observations' bound left out of it (also added to the
// store's count).
func (s *Store) RecordObservations(b *ObservationBatch) (Unrecorded, error) {
	var left Unrecorded
	var watchID uint64
	err := s.update(func(tx *bolt.Tx) error {
		obs, err := bucket(tx, bucketObservations)
		if err != nil {
			return err
		}
		denials, err := bucket(tx, bucketDenials)
		if err != nil {
			return err
		}
		if left, err = putObservations(obs, b.Observations, s.maxObservations()); err != nil {
			return err
		}
		if err := putMinutes(denials, b.Minutes); err != nil {
			return err
		}
		if b.Watch != nil {
			if watchID, err = putWatch(tx, b.Watch, b.Unrecorded.Plus(left)); err != nil {
				return err
			}
		}
		return addUnrecorded(tx, b.Unrecorded.Plus(left))
	})
	if err != nil {
		return Unrecorded{}, fmt.Errorf("record observations: %w", err)
	}
	if b.Watch != nil {
		b.Watch.ID = watchID
	}
	return left, nil
}

// bucket is a bucket a writer needs: a file opened for writing is
// migrated, so a missing one is an error, not a panic.
func bucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	if b := tx.Bucket(name); b != nil {
		return b, nil
	}
	return nil, badData("no bucket %s (a file of an older schema, not migrated)", name)
}

func (s *Store) maxObservations() int {
	if s.opts.MaxObservations > 0 {
		return s.opts.MaxObservations
	}
	return DefaultMaxObservations
}

// putObservations merges obs into b: known destinations add up, new ones
// go in while there is room; past the bound, the heaviest new ones evict
// the lightest, least recently seen old ones that have no more packets,
// and the others are left out. It returns what was left out or evicted.
func putObservations(b *bolt.Bucket, obs []Observation, limit int) (Unrecorded, error) {
	var left Unrecorded
	n := b.Stats().KeyN
	var fresh []Observation
	for _, o := range obs {
		if o.Kind != ObsDrop && o.Kind != ObsAudit {
			return left, fmt.Errorf("observation kind %q", o.Kind)
		}
		var rec obsRecord
		found, err := getJSON(b, obsKey(o.Kind, o.FlowKey), &rec)
		if err != nil {
			return left, err
		}
		if !found {
			fresh = append(fresh, o)
			continue
		}
		if err := putObs(b, o, rec); err != nil {
			return left, err
		}
	}
	room := max(0, limit-n)
	if len(fresh) <= room {
		return left, putNew(b, fresh)
	}
	slices.SortFunc(fresh, func(a, b Observation) int { return cmp.Compare(b.Hits, a.Hits) })
	rest := fresh[room:]
	victims, err := lightest(b, len(rest))
	if err != nil {
		return left, err
	}
	if err := putNew(b, fresh[:room]); err != nil {
		return left, err
	}
	for i, o := range rest {
		if i >= len(victims) || o.Hits < victims[i].Hits {
			left.Add(o.Kind, o.Hits)
			continue
		}
		if err := b.Delete(obsKey(victims[i].Kind, victims[i].FlowKey)); err != nil {
			return left, err
		}
		left.Add(victims[i].Kind, victims[i].Hits)
		if err := putNew(b, []Observation{o}); err != nil {
			return left, err
		}
	}
	return left, nil
}

func putObs(b *bolt.Bucket, o Observation, rec obsRecord) error {
	if rec.FirstSeen.IsZero() || o.FirstSeen.Before(rec.FirstSeen) {
		rec.FirstSeen = o.FirstSeen
	}
	if o.LastSeen.After(rec.LastSeen) {
		rec.LastSeen = o.LastSeen
	}
	rec.Hits += o.Hits
	rec.Services, _ = mergeList(rec.Services, o.Services, MaxServices)
	return putJSON(b, obsKey(o.Kind, o.FlowKey), &rec)
}

func putNew(b *bolt.Bucket, obs []Observation) error {
	for _, o := range obs {
		if err := putObs(b, o, obsRecord{}); err != nil {
			return err
		}
	}
	return nil
}

// lightest returns the n stored observations with the fewest packets,
// least recently seen first among equals. It keeps n candidates in a heap,
// not the whole bucket.
func lightest(b *bolt.Bucket, n int) ([]Observation, error) {
	h := &obsHeap{}
	err := b.ForEach(func(k, v []byte) error {
		o, err := decodeObs(k, v)
		if err != nil {
			return err
		}
		switch {
		case h.Len() < n:
			heap.Push(h, o)
		case lighter(o, (*h)[0]):
			(*h)[0] = o
			heap.Fix(h, 0)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := []Observation(*h)
	slices.SortFunc(out, func(a, b Observation) int {
		if lighter(a, b) {
			return -1
		}
		if lighter(b, a) {
			return 1
		}
		return 0
	})
	return out, nil
}

func lighter(a, b Observation) bool {
	return a.Hits < b.Hits || a.Hits == b.Hits && a.LastSeen.Before(b.LastSeen)
}

// obsHeap is a max-heap: the heaviest candidate on top, to be replaced.
type obsHeap []Observation

func (h obsHeap) Len() int           { return len(h) }
func (h obsHeap) Less(i, j int) bool { return lighter(h[j], h[i]) }
func (h obsHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *obsHeap) Push(x any)        { *h = append(*h, x.(Observation)) }
func (h *obsHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func decodeObs(k, v []byte) (Observation, error) {
	if len(k) != 1+flowKeyLen {
		return Observation{}, badData("observation key of %d bytes", len(k))
	}
	fk, err := parseFlowKey(k[1:])
	if err != nil {
		return Observation{}, err
	}
	var rec obsRecord
	if err := jsonUnmarshal(k, v, &rec); err != nil {
		return Observation{}, err
	}
	kind := ObsAudit
	if k[0] == ObsDrop[0] {
		kind = ObsDrop
	}
	return Observation{Kind: kind, FlowKey: fk, Hits: rec.Hits, FirstSeen: rec.FirstSeen, LastSeen: rec.LastSeen, Services: rec.Services}, nil
}

func jsonUnmarshal(k, v []byte, out any) error {
	if err := json.Unmarshal(v, out); err != nil {
		return badData("decode record %s: %w", shortHex(k), err)
	}
	return nil
}

func putMinutes(d *bolt.Bucket, minutes map[int64]DenialCount) error {
	for m, c := range minutes {
		key := binary.BigEndian.AppendUint64(nil, uint64(m))
		var cur DenialCount
		if _, err := getJSON(d, key, &cur); err != nil {
			return err
		}
		cur.Drop += c.Drop
		cur.Audit += c.Audit
		if err := putJSON(d, key, &cur); err != nil {
			return err
		}
	}
	return nil
}

func addUnrecorded(tx *bolt.Tx, u Unrecorded) error {
	if u.IsZero() {
		return nil
	}
	meta := tx.Bucket(bucketMeta)
	var cur Unrecorded
	if _, err := getJSON(meta, keyUnrecorded, &cur); err != nil {
		return err
	}
	cur = cur.Plus(u)
	return putJSON(meta, keyUnrecorded, &cur)
}

// Unrecorded returns the packets the store holds no destination for, in
// total.
func (s *Store) Unrecorded() (Unrecorded, error) {
	return read(s, func(tx *bolt.Tx) (Unrecorded, error) {
		var u Unrecorded
		_, err := getJSON(tx.Bucket(bucketMeta), keyUnrecorded, &u)
		return u, err
	})
}

// PruneOptions say what Prune deletes.
type PruneOptions struct {
	Now time.Time
	// Retention: observations not seen, per-minute denials and runs that
	// ended longer ago go (0: none go).
	Retention time.Duration
	// KeepGenerations: the newest generations keep their plans, the others
	// keep a summary (0: every plan is kept).
	KeepGenerations int
	// KeepPlans names more generations whose plans stay, given every
	// generation oldest first: the current ones and rollback targets.
	KeepPlans func([]Generation) []uint64
}

// PruneResult counts what Prune deleted.
type PruneResult struct {
	Observations int `json:"observations"`
	Denials      int `json:"denials"`
	Runs         int `json:"runs"`
	Watches      int `json:"watches"` // the monitor's runs
	Plans        int `json:"plans"`   // replaced by their summary
	DNSDenials   int `json:"dns_denials"`
	Refusals     int `json:"refusals"` // the name check's
}

// Prune deletes what is past the retention and the plans past
// KeepGenerations, in transactions of at most a few thousand records.
func (s *Store) Prune(o PruneOptions) (PruneResult, error) {
	var res PruneResult
	if o.Retention > 0 {
		cut := o.Now.Add(-o.Retention)
		steps := []struct {
			n    *int
			name []byte
			old  func(k, v []byte) (bool, error)
		}{
			{&res.Observations, bucketObservations, func(k, v []byte) (bool, error) {
				ob, err := decodeObs(k, v)
				return ob.LastSeen.Before(cut), err
			}},
			{&res.Denials, bucketDenials, func(k, _ []byte) (bool, error) {
				return len(k) == 8 && int64(binary.BigEndian.Uint64(k)) < cut.Unix()/60, nil
			}},
			{&res.Runs, bucketRuns, func(k, v []byte) (bool, error) {
				var r Run
				err := jsonUnmarshal(k, v, &r)
				return r.Start.Before(cut) && r.End.Before(cut), err
			}},
			{&res.Watches, bucketWatches, func(k, v []byte) (bool, error) {
				var w Watch
				err := jsonUnmarshal(k, v, &w)
				return w.End.Before(cut), err
			}},
			{&res.DNSDenials, bucketDNSDenials, func(k, v []byte) (bool, error) {
				var d DNSDenial
				err := jsonUnmarshal(k, v, &d)
				return d.LastSeen.Before(cut), err
			}},
			{&res.Refusals, bucketRefusals, func(k, v []byte) (bool, error) {
				if bytes.Equal(k, keyRefusalsLost) {
					return false, nil
				}
				r, err := decodeRefusal(k, v)
				return r.LastSeen.Before(cut), err
			}},
		}
		for _, st := range steps {
			n, err := s.pruneBucket(st.name, st.old)
			*st.n += n
			if err != nil {
				return res, fmt.Errorf("prune %s: %w", st.name, err)
			}
		}
		if res.DNSDenials > 0 {
			if err := s.recountDNSDenials(); err != nil {
				return res, err
			}
		}
	}
	if o.KeepGenerations > 0 {
		n, err := s.prunePlans(o)
		res.Plans = n
		if err != nil {
			return res, fmt.Errorf("prune plans: %w", err)
		}
	}
	return res, nil
}

// pruneBucket deletes the records old says are old, a chunk per
// transaction, and returns how many it deleted.
func (s *Store) pruneBucket(name []byte, old func(k, v []byte) (bool, error)) (int, error) {
	total := 0
	var after []byte // the scan resumes after the last key kept
	for {
		deleted, more := 0, false
		err := s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(name)
			if b == nil {
				return nil
			}
			var doomed [][]byte
			c := b.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil; k, v = c.Next() {
				if len(doomed) == pruneChunk {
					more = true
					break
				}
				gone, err := old(k, v)
				if err != nil {
					return err
				}
				if gone {
					doomed = append(doomed, bytes.Clone(k))
				} else {
					after = bytes.Clone(k)
				}
			}
			for _, k := range doomed {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			deleted = len(doomed)
			return nil
		})
		total += deleted
		if err != nil || !more {
			return total, err
		}
	}
}

// PlanSummary stands for a plan that was pruned.
type PlanSummary struct {
	Bytes  int       `json:"bytes"`
	SHA256 string    `json:"sha256"`
	Pruned time.Time `json:"pruned"`
}

// ErrPlanPruned means a generation's plan was replaced by its summary.
var ErrPlanPruned = errors.New("plan pruned (keep_generations)")

func (s *Store) prunePlans(o PruneOptions) (int, error) {
	total := 0
	for {
		n, more := 0, false
		err := s.update(func(tx *bolt.Tx) error {
			keep, err := plansToKeep(tx, o)
			if err != nil {
				return err
			}
			plans, err := bucket(tx, bucketPlans)
			if err != nil {
				return err
			}
			sums, err := bucket(tx, bucketPlanSummaries)
			if err != nil {
				return err
			}
			var doomed [][]byte
			err = plans.ForEach(func(k, _ []byte) error {
				if len(k) == 8 && !keep[binary.BigEndian.Uint64(k)] {
					doomed = append(doomed, bytes.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(doomed) > planChunk {
				doomed, more = doomed[:planChunk], true
			}
			for _, k := range doomed {
				sum, err := summarize(plans.Get(k))
				if err != nil {
					return fmt.Errorf("plan of generation %d: %w", binary.BigEndian.Uint64(k), err)
				}
				sum.Pruned = o.Now.UTC()
				if err := putJSON(sums, k, &sum); err != nil {
					return err
				}
				if err := plans.Delete(k); err != nil {
					return err
				}
			}
			n = len(doomed)
			return nil
		})
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// plansToKeep: the newest KeepGenerations generations and what KeepPlans
// names.
func plansToKeep(tx *bolt.Tx, o PruneOptions) (map[uint64]bool, error) {
	var gens []Generation
	err := each(tx, bucketGenerations, func(_ []byte, g *Generation) error {
		gens = append(gens, *g)
		return nil
	})
	if err != nil {
		return nil, err
	}
	keep := map[uint64]bool{}
	for _, g := range gens[max(0, len(gens)-o.KeepGenerations):] {
		keep[g.N] = true
	}
	if o.KeepPlans != nil {
		for _, n := range o.KeepPlans(gens) {
			keep[n] = true
		}
	}
	// A plan stored as a patch needs the plan it patches.
	base := map[uint64]uint64{}
	for _, g := range gens {
		base[g.N] = g.PlanBase
	}
	for n := range keep {
		for b := base[n]; b != 0 && !keep[b]; b = base[b] {
			keep[b] = true
		}
	}
	return keep, nil
}

func summarize(packed []byte) (PlanSummary, error) {
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		return PlanSummary{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, zr)
	if err != nil {
		return PlanSummary{}, err
	}
	return PlanSummary{Bytes: int(n), SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// PlanSummaries returns the summaries of the pruned plans, by generation.
func (s *Store) PlanSummaries() (map[uint64]PlanSummary, error) {
	return read(s, func(tx *bolt.Tx) (map[uint64]PlanSummary, error) {
		out := map[uint64]PlanSummary{}
		err := each(tx, bucketPlanSummaries, func(k []byte, p *PlanSummary) error {
			if len(k) == 8 {
				out[binary.BigEndian.Uint64(k)] = *p
			}
			return nil
		})
		return out, err
	})
}

// planPruned is the error for the pruned plan of generation n, or nil when
// it has no summary.
func planPruned(tx *bolt.Tx, n uint64) error {
	b := tx.Bucket(bucketPlanSummaries)
	if b == nil {
		return nil
	}
	var p PlanSummary
	if ok, err := getJSON(b, genKey(n), &p); err != nil || !ok {
		return err
	}
	return fmt.Errorf("plan of generation %d: %w on %s; it was %d bytes, sha256 %s", n, ErrPlanPruned,
		p.Pruned.Format(time.DateOnly), p.Bytes, p.SHA256)
}
