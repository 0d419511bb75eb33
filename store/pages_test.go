package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestHugeOverflowIsAnError: a freelist page whose overflow count was
// garbled to billions made the next write loop inside bbolt's commit,
// freeing page after page, for minutes and without a memory bound (the
// fuzzer found it; CI's fuzz step hung). A write now refuses the file,
// naming it, before bbolt frees anything.
func TestHugeOverflowIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baseline.db")
	fillRealStore(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const ps = 4096
	free := metaOf(t, path).freelist
	if free < 2 || int(free+1)*ps > len(data) {
		t.Fatalf("freelist page %d in a file of %d bytes", free, len(data))
	}
	binary.LittleEndian.PutUint32(data[int(free)*ps+12:], 0xfffffff0) // the page header's overflow
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Create(path, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "overflow") {
		t.Fatalf("create on a garbled overflow count: %v, want an error that names the file and says it is corrupt", err)
	}
}

// TestBucketWhereValueIsAnError: where a value should be, the file holds
// a bucket (a flipped flag in a leaf does it). bbolt says "incompatible
// value", which named neither the file nor the fault (the fuzzer found it).
func TestBucketWhereValueIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baseline.db")
	fillRealStore(t, path)
	minute := t0.Unix() / 60
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		d := tx.Bucket(bucketDenials)
		key := binary.BigEndian.AppendUint64(nil, uint64(minute))
		if err := d.Delete(key); err != nil {
			return err
		}
		_, err := d.CreateBucket(key)
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Create(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.AddObservations(nil, map[int64]DenialCount{minute: {Drop: 1}})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("add denials over a bucket: %v, want an error that names the file and says it is corrupt", err)
	}
}

// TestHugeSchemaValueIsAnError: a garbled length made the schema version
// a value of 1.5 GB, and the error quoted it whole (twice: strconv's error
// quotes its input too), so opening the file ran for minutes and took
// gigabytes. A schema version longer than a number is refused as it is.
func TestHugeSchemaValueIsAnError(t *testing.T) {
	for name, v := range map[string][]byte{"long": bytes.Repeat([]byte("9"), 1<<20), "not a number": []byte("7x")} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "baseline.db")
			fillRealStore(t, path)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, v) })
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			_, err = Open(path, Options{})
			if !errors.Is(err, ErrCorrupt) || strings.Count(err.Error(), path) != 1 || len(err.Error()) > 300 {
				t.Fatalf("open with a schema version of %d bytes: %.400v, want a short error that names the file once and says it is corrupt", len(v), err)
			}
			t.Log(err)
		})
	}
}

// TestHugeKeySizeIsAnError: a leaf element whose key size was garbled to
// 160 MB made a write copy that much of whatever memory follows bbolt's
// map and allocate pages for it (4 GB allocated in one fuzz iteration,
// which then ran out of time), and a read quoted the whole key in its
// error. A write now refuses the file, and a read's error stays short.
func TestHugeKeySizeIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baseline.db")
	fillRealStore(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A leaf page in use (the file also holds stale copies in free pages).
	garbled := 0
	db, err := bolt.Open(path, 0o600, nil) // writable: the free pages are loaded
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		for id := 2; garbled == 0; id++ {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return err
			}
			if p.Type == "leaf" && p.Count > 0 {
				garbled = id
			}
		}
		return nil
	})
	db.Close()
	if garbled == 0 {
		t.Fatal("no leaf page in use in the file")
	}
	binary.LittleEndian.PutUint32(data[garbled*4096+pageHeader+8:], 160<<20) // the first element's key size
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Create(path, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "runs past the page") {
		t.Fatalf("create with a garbled key size on page %d: %v, want an error that names the file and says it is corrupt", garbled, err)
	}
	if len(err.Error()) > 300 {
		t.Fatalf("error of %d bytes", len(err.Error()))
	}
}

// TestPageCycleIsAnError: a bucket whose root page is the page that holds
// the bucket itself made a read (bbolt's Bucket.Stats, behind every count)
// recurse until the stack overflowed, which kills the process: recover
// cannot catch it (the fuzzer found it). Now the file is refused.
func TestPageCycleIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baseline.db")
	fillRealStore(t, path)
	m := metaOf(t, path)
	var root uint64
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error { root = uint64(tx.Bucket(bucketFlows).Root()); return nil })
	db.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ref := binary.LittleEndian.AppendUint64(append([]byte(nil), bucketFlows...), root)
	if !bytes.Contains(data, ref) {
		t.Fatalf("no reference to the flows bucket's root page %d", root)
	}
	data = bytes.ReplaceAll(data, ref, binary.LittleEndian.AppendUint64(append([]byte(nil), bucketFlows...), m.root))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "reached twice") {
		t.Fatalf("open with a page cycle: %v, want an error that names the file and says it is corrupt", err)
	}
}

// metaOf is the meta bbolt uses in the file at path (as the check reads it).
func metaOf(t testing.TB, path string) meta {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := readMeta(f, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
