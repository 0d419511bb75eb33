package store

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DNS questions and denied names (schema 5).
//
// questions/ holds every question a user asked while learning, with the
// answer codes it got (NXDOMAIN included: a search-domain try that was
// made during learning stays allowed under dns_policy). dns_denials/
// holds the names the DNS policy stopped or audited, by user. Both are
// bounded; what does not fit is counted in meta, never dropped silently.

var (
	bucketQuestions  = []byte("questions")
	bucketDNSDenials = []byte("dns_denials")

	keyQuestionsUnrecorded = []byte("questions_unrecorded")
	keyDenialsUnrecorded   = []byte("dns_denials_unrecorded")
	keyQuestionsCount      = []byte("questions_count")
	keyDenialsCount        = []byte("dns_denials_count")
)

// Bounds of the two buckets: names (keys), and query types kept a name.
const (
	MaxQuestions       = 200000
	MaxDNSDenialNames  = 20000
	maxQTypesAQuestion = 16
)

// The bounds in force (tests lower them).
var (
	maxQuestions      = MaxQuestions
	maxDNSDenialNames = MaxDNSDenialNames
)

// QuestionObservation is one answered question of one user.
type QuestionObservation struct {
	UID   uint32
	Name  string // lower-case, no trailing dot
	QType uint16
	Rcode int
	Seen  time.Time
	Hits  uint64 // 0 counts as 1
}

// Question is what the store knows of one user's question name.
type Question struct {
	UID       uint32            `json:"uid"`
	Name      string            `json:"name"`
	Hits      uint64            `json:"hits"`
	QTypes    []uint16          `json:"qtypes"`
	Rcodes    map[string]uint64 `json:"rcodes"` // "0" NOERROR, "3" NXDOMAIN...
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
}

// DNSDenial is what the store knows of one user's denied name.
type DNSDenial struct {
	UID       uint32    `json:"uid"`
	Name      string    `json:"name"` // "" for queries that could not be parsed
	Hits      uint64    `json:"hits"`
	Dropped   uint64    `json:"dropped"`
	Malformed uint64    `json:"malformed"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

func uidNameKey(uid uint32, name string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uid), name...)
}

func uidNameOf(k []byte) (uint32, string) {
	return binary.BigEndian.Uint32(k), string(k[4:])
}

// countUnrecorded adds n to the meta counter key (a count of names, or of
// what found no room).
func countUnrecorded(tx *bolt.Tx, key []byte, n uint64) error {
	meta := tx.Bucket(bucketMeta)
	var v uint64
	if b := meta.Get(key); len(b) == 8 {
		v = binary.BigEndian.Uint64(b)
	}
	return meta.Put(key, binary.BigEndian.AppendUint64(nil, v+n))
}

func readCounter(tx *bolt.Tx, key []byte) uint64 {
	if b := tx.Bucket(bucketMeta).Get(key); len(b) == 8 {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func applyQuestion(tx *bolt.Tx, o QuestionObservation) error {
	b, err := bucket(tx, bucketQuestions)
	if err != nil {
		return err
	}
	key := uidNameKey(o.UID, o.Name)
	var q Question
	found, err := getJSON(b, key, &q)
	if err != nil {
		return err
	}
	if !found {
		if readCounter(tx, keyQuestionsCount) >= uint64(maxQuestions) {
			return countUnrecorded(tx, keyQuestionsUnrecorded, max(o.Hits, 1))
		}
		if err := countUnrecorded(tx, keyQuestionsCount, 1); err != nil {
			return err
		}
		q = Question{UID: o.UID, Name: o.Name, FirstSeen: o.Seen, Rcodes: map[string]uint64{}}
	}
	q.Hits += max(o.Hits, 1)
	WidenSeen(&q.FirstSeen, &q.LastSeen, o.Seen, o.Seen)
	if !slices.Contains(q.QTypes, o.QType) && len(q.QTypes) < maxQTypesAQuestion {
		q.QTypes = append(q.QTypes, o.QType)
	}
	q.Rcodes[fmt.Sprint(o.Rcode)] += max(o.Hits, 1)
	return putJSON(b, key, &q)
}

// Questions returns every recorded question, by uid and name.
func (s *Store) Questions() (out []Question, unrecorded uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketQuestions)
		if b == nil {
			return nil // an older schema: nothing recorded yet
		}
		unrecorded = readCounter(tx, keyQuestionsUnrecorded)
		return b.ForEach(func(k, v []byte) error {
			var q Question
			if err := jsonValue(k, v, &q); err != nil {
				return err
			}
			out = append(out, q)
			return nil
		})
	})
	return out, unrecorded, err
}

// RecordDNSDenials adds the policy's denials to the store, in one
// transaction. Past MaxDNSDenialNames names, a new name is counted as
// unrecorded.
func (s *Store) RecordDNSDenials(ds []DNSDenial) error {
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketDNSDenials)
		if err != nil {
			return err
		}
		for _, d := range ds {
			key := uidNameKey(d.UID, d.Name)
			var cur DNSDenial
			found, err := getJSON(b, key, &cur)
			if err != nil {
				return err
			}
			if !found {
				if readCounter(tx, keyDenialsCount) >= uint64(maxDNSDenialNames) {
					if err := countUnrecorded(tx, keyDenialsUnrecorded, d.Hits); err != nil {
						return err
					}
					continue
				}
				if err := countUnrecorded(tx, keyDenialsCount, 1); err != nil {
					return err
				}
				cur = DNSDenial{UID: d.UID, Name: d.Name, FirstSeen: d.FirstSeen}
			}
			cur.Hits += d.Hits
			cur.Dropped += d.Dropped
			cur.Malformed += d.Malformed
			WidenSeen(&cur.FirstSeen, &cur.LastSeen, d.FirstSeen, d.LastSeen)
			if err := putJSON(b, key, &cur); err != nil {
				return err
			}
		}
		return nil
	})
}

// DNSDenials returns the recorded denied names last seen at or after
// since, and the denials no record could hold.
func (s *Store) DNSDenials(since time.Time) (out []DNSDenial, unrecorded uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDNSDenials)
		if b == nil {
			return nil
		}
		unrecorded = readCounter(tx, keyDenialsUnrecorded)
		return b.ForEach(func(k, v []byte) error {
			var d DNSDenial
			if err := jsonValue(k, v, &d); err != nil {
				return err
			}
			if !d.LastSeen.Before(since) {
				out = append(out, d)
			}
			return nil
		})
	})
	return out, unrecorded, err
}

func jsonValue(k, v []byte, out any) error {
	if len(k) < 4 {
		return badData("key %s too short", shortHex(k))
	}
	return jsonUnmarshal(k, v, out)
}

// recountDNSDenials sets the count of denied names to the bucket's (after
// a prune).
func (s *Store) recountDNSDenials() error {
	return s.update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, bucketDNSDenials)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyDenialsCount, binary.BigEndian.AppendUint64(nil, uint64(b.Stats().KeyN)))
	})
}
