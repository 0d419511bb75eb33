// Package storetest holds what tests of the store and of its users share
// to damage a store file on purpose. It does not import the store, so that
// the store's own tests can use it.
package storetest

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BreakBucketRoot points the root page of bucket far beyond the end of
// the file at path, in the root bucket's leaf page (and in freed copies
// of it, which may hold the same bytes): a reader that follows it
// without checking dies of SIGSEGV.
func BreakBucketRoot(tb testing.TB, path, bucket string) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	var root uint64
	_ = db.View(func(tx *bolt.Tx) error { root = uint64(tx.Bucket([]byte(bucket)).Root()); return nil })
	db.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	ref := binary.LittleEndian.AppendUint64([]byte(bucket), root)
	if root == 0 || !bytes.Contains(data, ref) {
		tb.Fatalf("no reference to bucket %s's root page %d", bucket, root)
	}
	data = bytes.ReplaceAll(data, ref, binary.LittleEndian.AppendUint64([]byte(bucket), 1<<30))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}
