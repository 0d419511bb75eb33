package store

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestDNSTableBounded: the DNS table holds at most maxDNSAddresses
// addresses (nothing prunes it, and a user's answers can give new ones
// without end). An observation of a new address past it is counted
// (Batch.DNSUnrecorded, meta/dns_unrecorded), not kept; one of an address
// already there still adds its name. A store written before the count was
// kept is counted once.
func TestDNSTableBounded(t *testing.T) {
	saved := maxDNSAddresses
	maxDNSAddresses = 3
	t.Cleanup(func() { maxDNSAddresses = saved })
	s, err := Create(filepath.Join(t.TempDir(), "d.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0).UTC()
	obs := func(ip, name string) DNSObservation {
		return DNSObservation{IP: netip.MustParseAddr(ip), Names: []string{name}, TTL: 60, UID: 1000, Seen: t0}
	}
	b := &Batch{DNS: []DNSObservation{obs("10.0.0.1", "a.example"), obs("10.0.0.2", "a.example")}}
	if err := s.Apply(b); err != nil || b.DNSUnrecorded != 0 {
		t.Fatalf("apply: %v, %d unrecorded", err, b.DNSUnrecorded)
	}
	// A store of before the count: the count is made from the table.
	if err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyDNSCount) }); err != nil {
		t.Fatal(err)
	}
	var flood []DNSObservation
	for i := range 5 {
		flood = append(flood, obs(fmt.Sprintf("10.0.1.%d", i), "flood.example"))
	}
	b = &Batch{DNS: append(flood, obs("10.0.0.1", "b.example"))}
	if err := s.Apply(b); err != nil {
		t.Fatal(err)
	}
	if b.DNSUnrecorded != 4 {
		t.Fatalf("%d observations unrecorded, want 4 (one new address of five fits)", b.DNSUnrecorded)
	}
	entries, err := s.DNS()
	if err != nil {
		t.Fatal(err)
	}
	names := map[netip.Addr]int{}
	for _, e := range entries {
		names[e.IP] = len(e.Names)
	}
	if len(entries) != 3 || names[netip.MustParseAddr("10.0.0.1")] != 2 {
		t.Fatalf("the DNS table holds %v, want 3 addresses, 10.0.0.1 with its 2 names", names)
	}
	var count, unrecorded uint64
	if err := s.view(func(tx *bolt.Tx) error {
		count, unrecorded = readCounter(tx, keyDNSCount), readCounter(tx, keyDNSUnrecorded)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if count != 3 || unrecorded != 4 {
		t.Fatalf("meta: dns_count %d, dns_unrecorded %d; want 3 and 4", count, unrecorded)
	}
}
