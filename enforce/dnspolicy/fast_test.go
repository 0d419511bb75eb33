package dnspolicy

import (
	"fmt"
	"testing"
)

// TestFastTable: at the size load gives it, the fast table holds every
// exact name, each for its own user only, and no wildcard (those stay in
// the hash map); overfilled, it leaves names out (they are looked up in
// the hash map) and never holds a fingerprint it was not given.
func TestFastTable(t *testing.T) {
	key := Key{0x0123456789abcdef, 0xfedcba9876543210}
	var entries []Entry
	for i := range 5000 {
		entries = append(entries, Entry{UID: uint32(1000 + i%7), Name: fmt.Sprintf("n%d.example.lab", i)})
	}
	entries = append(entries, Entry{UID: AllUsers, Name: "*.cdn.lab"}, Entry{UID: AllUsers, Name: "ntp.lab"})
	tab, left := buildFast(key, hashAll(key, entries), fastBuckets(len(entries)))
	if left != 0 {
		t.Fatalf("%d names left out of a half-full table", left)
	}
	for _, e := range entries {
		kind, h := hashOf(key, e.Name)
		if got := fastHas(tab, e.UID, h); got != (kind == kindName) {
			t.Errorf("%d %s: in the table %v", e.UID, e.Name, got)
		}
		if fastHas(tab, e.UID+1, h) {
			t.Errorf("%s of uid %d is in the table for uid %d", e.Name, e.UID, e.UID+1)
		}
	}
	if _, h := hashOf(key, "never.asked.lab"); fastHas(tab, 1000, h) {
		t.Error("a name never given is in the table")
	}

	small, left := buildFast(key, hashAll(key, entries), 4) // 32 slots for 5001 names
	if left != 5001-32 {
		t.Errorf("left out of 32 slots: %d, want %d", left, 5001-32)
	}
	given := map[uint64]bool{}
	for _, e := range entries {
		_, h := hashOf(key, e.Name)
		given[fastFP(e.UID, h)] = true
	}
	for b, bucket := range small {
		for _, fp := range bucket {
			if fp == 0 || !given[fp] {
				t.Errorf("bucket %d holds %#x", b, fp)
			}
			if b1, b2 := fastHome(fp, 3); uint32(b) != b1 && uint32(b) != b2 {
				t.Errorf("%#x in bucket %d, not one of its own (%d, %d)", fp, b, b1, b2)
			}
		}
	}
}

func TestFastFPNeverZero(t *testing.T) {
	uid := uint32(7)
	if fastFP(0, 0) != 1 || fastFP(uid, uint64(uid)*fastMul) != 1 {
		t.Error("a fingerprint of 0 would be an empty slot")
	}
}
