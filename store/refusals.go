package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The name check's refusals: connections to a name-checked destination
// that presented a name the user did not learn there (or none), by
// destination and name presented. "egress-enforce denied" shows them.

var (
	bucketRefusals = []byte("refusals")
	// keyRefusalsLost counts refusals the bound left out (not a
	// refusal's key: those are longer).
	keyRefusalsLost = []byte("~unrecorded")
)

// MaxRefusals bounds the (destination, name) records kept: a user sending
// a new name on every connection must not grow the store. Refusals of new
// records past it are counted (RefusalsUnrecorded), not kept.
const MaxRefusals = 10_000

// maxRefusals is MaxRefusals (a variable: tests lower it).
var maxRefusals = MaxRefusals

// Refusal is what the name check refused on one destination for one name
// presented ("" for none).
type Refusal struct {
	FlowKey
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`    // tls, http or none: what the first data was
	Verdict   string    `json:"verdict"` // mismatch or no_name
	Dropped   uint64    `json:"dropped"` // connections dropped (enforce)
	Audited   uint64    `json:"audited"` // connections logged only (audit)
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

type refusalRecord struct {
	Name      struct{}  `json:"name,omitzero"`
	Kind      string    `json:"kind"`
	Verdict   string    `json:"verdict"`
	Dropped   uint64    `json:"dropped"`
	Audited   uint64    `json:"audited"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

func refusalKey(r *Refusal) []byte {
	return append(r.FlowKey.bytes(), r.Name...)
}

// RecordRefusals adds refusals (deltas: counts are added, times widen),
// and lost refused connections the caller could not keep, in one
// transaction.
func (s *Store) RecordRefusals(rs []Refusal, lost uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketRefusals)
		if err != nil {
			return err
		}
		if lost > 0 {
			if err := addCount(b, keyRefusalsLost, lost); err != nil {
				return err
			}
		}
		n := b.Stats().KeyN
		for i := range rs {
			r := &rs[i]
			if len(r.Name) > 255 {
				return fmt.Errorf("record a refusal: a name of %d bytes", len(r.Name))
			}
			k := refusalKey(r)
			var rec refusalRecord
			found, err := getJSON(b, k, &rec)
			if err != nil {
				return err
			}
			if !found {
				if n >= maxRefusals {
					if err := addCount(b, keyRefusalsLost, r.Dropped+r.Audited); err != nil {
						return err
					}
					continue
				}
				n++
				rec.FirstSeen, rec.LastSeen = r.FirstSeen, r.LastSeen
			}
			rec.Kind, rec.Verdict = r.Kind, r.Verdict
			rec.Dropped += r.Dropped
			rec.Audited += r.Audited
			WidenSeen(&rec.FirstSeen, &rec.LastSeen, r.FirstSeen, r.LastSeen)
			if err := putJSON(b, k, &rec); err != nil {
				return err
			}
		}
		return nil
	})
}

func addCount(b *bolt.Bucket, k []byte, n uint64) error {
	var v uint64
	if old := b.Get(k); len(old) == 8 {
		v = binary.BigEndian.Uint64(old)
	}
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v+n))
}

// Refusals reads the recorded refusals, and how many refused connections
// the bound left out.
func (s *Store) Refusals() (out []Refusal, unrecorded uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRefusals)
		if b == nil {
			return nil // a file of schema 6 or older: none yet
		}
		return b.ForEach(func(k, v []byte) error {
			if bytes.Equal(k, keyRefusalsLost) {
				if len(v) == 8 {
					unrecorded = binary.BigEndian.Uint64(v)
				}
				return nil
			}
			r, err := decodeRefusal(k, v)
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, unrecorded, err
}

func decodeRefusal(k, v []byte) (Refusal, error) {
	if len(k) < flowKeyLen {
		return Refusal{}, badData("refusal key of %d bytes", len(k))
	}
	fk, err := parseFlowKey(k[:flowKeyLen])
	if err != nil {
		return Refusal{}, err
	}
	var rec refusalRecord
	if err := jsonUnmarshal(k, v, &rec); err != nil {
		return Refusal{}, err
	}
	return Refusal{FlowKey: fk, Name: string(k[flowKeyLen:]), Kind: rec.Kind, Verdict: rec.Verdict, Dropped: rec.Dropped,
		Audited: rec.Audited, FirstSeen: rec.FirstSeen, LastSeen: rec.LastSeen}, nil
}
