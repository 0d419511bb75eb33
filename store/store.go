package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this binary reads and writes.
const SchemaVersion = 8

// DefaultPath is where the baseline lives unless configured otherwise.
const DefaultPath = "/var/lib/egress/baseline.db"

var (
	bucketMeta  = []byte("meta")
	bucketFlows = []byte("flows")
	bucketDNS   = []byte("dns")
	bucketRuns  = []byte("runs")

	keySchema  = []byte("schema")
	keyCreated = []byte("created")
)

// ErrBusy means the file stayed locked by another process for the whole
// timeout.
var ErrBusy = errors.New("store is locked by another process")

// ErrNotExist means there is no store file at the path.
var ErrNotExist = errors.New("store does not exist")

// Options tune how a Store opens its file.
type Options struct {
	// LockTimeout bounds the wait for the file lock. Zero means 5 seconds.
	LockTimeout time.Duration
	// MaxObservations bounds the monitor's observations (destinations).
	// Zero means DefaultMaxObservations.
	MaxObservations int
	// PageSize is the page size of a file Create makes (0: bbolt's
	// default, the OS's page size): a power of two from 4 KiB to 64 KiB.
	// A file that exists keeps the page size it was made with. Larger
	// pages make a write of many flows into a new store cheaper (fewer
	// pages to split, write and sync one by one); small writes into a
	// large store then rewrite more bytes per page they change.
	PageSize int
}

// minPageSize and maxPageSize bound Options.PageSize.
const minPageSize, maxPageSize = 4 << 10, 64 << 10

// Store is a baseline file. It holds no open file between calls: each
// method opens the file, runs one transaction and closes it (see the
// package documentation).
type Store struct {
	path string
	opts Options

	mu          sync.Mutex
	lastRelease time.Time     // when this Store last let go of the write lock
	lastHold    time.Duration // how long it held it then
	// The file and transaction this Store last checked or committed: a
	// file found as it was then needs no new check (pagecheck.go).
	checkMu     sync.Mutex
	checkedFile os.FileInfo
	checkedTx   int

	faultMu sync.Mutex
	fault   error // set once a transaction faulted on the file (fault.go)
}

// writeGap is the longest time between two write locks of one Store (the
// gap is as long as the lock was last held, up to this). bbolt polls for
// the file lock every 50 ms; without the gap, a writer that commits chunk
// after chunk would hold the lock at every poll of a waiting reader, which
// would then time out. (A variable: the soak test turns it off.)
var writeGap = 60 * time.Millisecond

// writeMmapSize is the size of the map of a store opened for writing.
const writeMmapSize = 1 << 30

// writeAllocSize is the room a write that grows the file leaves after
// what it needs.
const writeAllocSize = 1 << 20

// Create opens the store at path for writing, creating it (mode 0600, and
// its folder mode 0700) when it does not exist. An existing file must be a
// store: an empty file, a foreign bbolt file or a corrupt one is refused and
// left as it is. Pending schema migrations run here.
func Create(path string, opts Options) (*Store, error) {
	if ps := opts.PageSize; ps != 0 && (ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0) {
		return nil, fmt.Errorf("create store %s: page size %d is not a power of two from %d to %d", path, ps, minPageSize, maxPageSize)
	}
	s := &Store{path: path, opts: opts}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create store folder: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("open store %s: not a regular file", path)
	case st.Size() == 0:
		return nil, fmt.Errorf("open store %s: the file is empty, not a store; remove it or choose another --db", path)
	}
	err = s.update(func(tx *bolt.Tx) error { return migrate(tx, path) })
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Open opens an existing store for reading and checks that it is one.
func Open(path string, opts Options) (*Store, error) {
	s := &Store{path: path, opts: opts}
	if err := s.view(func(*bolt.Tx) error { return nil }); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the file behind the store.
func (s *Store) Path() string { return s.path }

// WithLockTimeout is a Store of the same file that waits up to d for the
// file lock, and knows what s knows of the file's last checked state: its
// first transaction does not check the file's pages again when nothing
// else wrote since (a learner's last flush into a new Store of a 450 MB
// store took its RSS from 100 to 560 MiB when the check went through the
// map).
func (s *Store) WithLockTimeout(d time.Duration) *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	o := s.opts
	o.LockTimeout = d
	return &Store{path: s.path, opts: o, lastRelease: s.lastRelease, lastHold: s.lastHold, checkedFile: s.checkedFile, checkedTx: s.checkedTx}
}

func (s *Store) timeout() time.Duration {
	if s.opts.LockTimeout > 0 {
		return s.opts.LockTimeout
	}
	return 5 * time.Second
}

func (s *Store) open(readOnly bool, h *handle) error {
	if readOnly {
		st, err := os.Stat(s.path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("open store %s: %w (run egress-learn run first, or pass --db)", s.path, ErrNotExist)
		}
		if err != nil {
			return fmt.Errorf("open store %s: %w", s.path, err)
		}
		if st.Size() == 0 {
			return fmt.Errorf("open store %s: the file is empty, not a store", s.path)
		}
	}
	o := &bolt.Options{
		Timeout:  s.timeout(),
		ReadOnly: readOnly,
		OpenFile: h.openFile,
	}
	if !readOnly {
		// Address space only: a write that grows the file past the map
		// makes bbolt map it again, and copy every page the write
		// touched out of the old map first (an apply that adds 100,000
		// flows to a new store did that a dozen times: 70 ms).
		o.InitialMmapSize = writeMmapSize
		// bbolt uses it only when it makes the file (an empty file is
		// refused before: Create).
		o.PageSize = s.opts.PageSize
	}
	db, err := bolt.Open(s.path, 0o600, o)
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("open store %s: %w for %s", s.path, ErrBusy, s.timeout())
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch):
		return fmt.Errorf("open store %s: not a valid store file (corrupt or another format): %w", s.path, err)
	case err != nil:
		return fmt.Errorf("open store %s: %w", s.path, err)
	}
	if !readOnly {
		// With a 1 GiB map bbolt grows the file by AllocSize past what a
		// commit needs (16 MiB by default): a store of a few flows would
		// be a 16 MiB file.
		db.AllocSize = writeAllocSize
	}
	h.db = db
	return nil
}

// view runs fn in a read transaction on a freshly opened file. A fault or
// a panic on a damaged page becomes an error naming the file (fault.go).
func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	if err := s.faulted(); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	h := &handle{}
	defer func() {
		if r := recover(); r != nil {
			err = s.corrupted("read", h, r)
		}
	}()
	if err := s.open(true, h); err != nil {
		return err
	}
	err = h.db.View(func(tx *bolt.Tx) error {
		if err := s.check(h, tx.ID()); err != nil {
			return err
		}
		if err := checkSchema(tx, s.path); err != nil {
			return err
		}
		return fn(tx)
	})
	_ = h.db.Close()
	return s.named("read", err)
}

// update runs fn in a write transaction on a freshly opened file, with
// the same protection as view.
func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	if err := s.faulted(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The lock stays free at least as long as it was last held, up to
	// writeGap: a writer of chunk after chunk lets a waiting reader in,
	// and a command's few short writes do not wait for nothing.
	if d, gap := time.Since(s.lastRelease), min(writeGap, s.lastHold); d < gap {
		time.Sleep(gap - d)
	}
	locked := time.Now()
	defer func() { s.lastRelease = time.Now(); s.lastHold = s.lastRelease.Sub(locked) }()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	h := &handle{}
	defer func() {
		if r := recover(); r != nil {
			err = s.corrupted("write", h, r)
		}
	}()
	if err := s.open(false, h); err != nil {
		return err
	}
	var txid int
	err = h.db.Update(func(tx *bolt.Tx) error {
		txid = tx.ID()
		if err := s.check(h, txid-1); err != nil {
			return err
		}
		return fn(tx)
	})
	if err == nil {
		s.checked(h, txid) // bbolt wrote it from a checked file
	}
	if cerr := h.db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close store %s: %w", s.path, cerr)
	}
	return s.named("write", err)
}

// check checks the file of h as of transaction txid, unless this Store
// checked or wrote that state already.
func (s *Store) check(h *handle, txid int) error {
	st, err := h.file.Stat()
	if err != nil {
		return fmt.Errorf("stat store %s: %w", s.path, err)
	}
	s.checkMu.Lock()
	done := s.checkedFile != nil && os.SameFile(st, s.checkedFile) && s.checkedTx == txid
	s.checkMu.Unlock()
	if done {
		return nil
	}
	if err := checkFile(h.file, h.db.Info().PageSize, uint64(txid)); err != nil {
		return err
	}
	s.checked(h, txid)
	return nil
}

func (s *Store) checked(h *handle, txid int) {
	st, err := h.file.Stat()
	s.checkMu.Lock()
	defer s.checkMu.Unlock()
	if err != nil {
		s.checkedFile = nil
		return
	}
	s.checkedFile, s.checkedTx = st, txid
}

// schemaOf reads the schema version: 0 for a file with no meta bucket.
func schemaOf(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	v := meta.Get(keySchema)
	if v == nil {
		return 0, nil
	}
	// A damaged file may hold gigabytes here: neither the error nor
	// strconv's (which quotes its input) may copy them.
	if len(v) > 8 {
		return 0, badData("read schema version: %d bytes, not a number", len(v))
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return 0, badData("read schema version %q: not a number", v)
	}
	return n, nil
}

func checkSchema(tx *bolt.Tx, path string) error {
	v, err := schemaOf(tx)
	if err != nil {
		return err // a data error: view and update name the file
	}
	if v == 0 {
		return fmt.Errorf("open store %s: not an egress store (no schema version)", path)
	}
	if v > SchemaVersion {
		return fmt.Errorf("open store %s: schema version %d is newer than this binary supports (%d): upgrade egress", path, v, SchemaVersion)
	}
	return nil
}

// migration moves the layout from version-1 to version.
type migration struct {
	version int
	name    string
	fn      func(tx *bolt.Tx) error
}

// migrations run in order; each one's version is one more than the last.
var migrations = []migration{
	{1, "initial layout", func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketFlows, bucketDNS, bucketRuns} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyCreated, []byte(time.Now().UTC().Format(time.RFC3339)))
	}},
	{2, "generations and observations of the enforcer", func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketGenerations, bucketPlans, bucketObservations, bucketDenials} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}},
	{3, "summaries of pruned plans", func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketPlanSummaries)
		return err
	}},
	{4, "the monitor's runs", func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketWatches)
		return err
	}},
	{5, "DNS questions and denied names", func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketQuestions, bucketDNSDenials} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}},
	// Nothing moves: the version keeps older binaries, which would read a
	// patch as an empty plan, away from a file that may hold one.
	{6, "plans stored as patches of another generation's plan", func(*bolt.Tx) error { return nil }},
	{7, "the name check's refusals", func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketRefusals)
		return err
	}},
	// The version keeps older binaries, which un-approve flows without
	// counting it, away from a file whose generations say their flows
	// are still approved (approvalsepoch.go).
	{8, "the count of writes that un-approved flows", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyApprovalsEpoch, binary.BigEndian.AppendUint64(nil, 1))
	}},
}

// latest is the version the migrations reach.
func latest() int { return migrations[len(migrations)-1].version }

func migrate(tx *bolt.Tx, path string) error {
	v, err := schemaOf(tx)
	if err != nil {
		return err // a data error: view and update name the file
	}
	if v == 0 {
		// A bbolt file with buckets but no schema belongs to someone else.
		foreign := false
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { foreign = true; return nil })
		if foreign {
			return fmt.Errorf("open store %s: not an egress store (a bbolt file without our schema); nothing was changed", path)
		}
	}
	if v > latest() {
		return fmt.Errorf("open store %s: schema version %d is newer than this binary supports (%d): upgrade egress", path, v, latest())
	}
	for _, m := range migrations {
		if m.version <= v {
			continue
		}
		if err := m.fn(tx); err != nil {
			return fmt.Errorf("migrate store %s to version %d (%s): %w", path, m.version, m.name, err)
		}
		if err := tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(m.version))); err != nil {
			return fmt.Errorf("migrate store %s to version %d: %w", path, m.version, err)
		}
	}
	return nil
}

// Info describes a store file.
type Info struct {
	Path    string    `json:"path"`
	Schema  int       `json:"schema"`
	Created time.Time `json:"created"`
	Flows   int       `json:"flows"`
	DNS     int       `json:"dns"`
	Runs    int       `json:"runs"`
}

// Info reads the schema version and the size of each table.
func (s *Store) Info() (Info, error) {
	info := Info{Path: s.path}
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		if info.Schema, err = schemaOf(tx); err != nil {
			return err
		}
		if c := tx.Bucket(bucketMeta).Get(keyCreated); c != nil {
			info.Created, _ = time.Parse(time.RFC3339, string(c))
		}
		info.Flows = countKeys(tx.Bucket(bucketFlows))
		info.DNS = countKeys(tx.Bucket(bucketDNS))
		info.Runs = countKeys(tx.Bucket(bucketRuns))
		return nil
	})
	return info, err
}

func countKeys(b *bolt.Bucket) int {
	if b == nil {
		return 0
	}
	return b.Stats().KeyN
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	return true, decodeJSON(key, data, v)
}

// decodeJSON decodes the record data of key into v; nil data (no value,
// or a bucket) leaves v as it is.
func decodeJSON(key, data []byte, v any) error {
	if data == nil {
		return nil
	}
	if rec, ok := v.(*flowRecord); ok { // the most numerous records: a faster reader
		return decodeFlowRecord(key, data, rec)
	}
	return jsonUnmarshal(key, data, v)
}

// PutMeta stores a small value under key in the meta bucket (for state
// such as a follower's counters).
func (s *Store) PutMeta(key string, value []byte) error {
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte("x-"+key), value)
	})
}

// GetMeta returns what PutMeta stored under key, or nil.
func (s *Store) GetMeta(key string) ([]byte, error) {
	return read(s, func(tx *bolt.Tx) ([]byte, error) {
		b := tx.Bucket(bucketMeta)
		if b == nil {
			return nil, nil
		}
		return bytes.Clone(b.Get([]byte("x-" + key))), nil
	})
}
