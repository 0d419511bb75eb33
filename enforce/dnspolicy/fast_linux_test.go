//go:build linux

package dnspolicy

import (
	"fmt"
	"testing"

	"github.com/egresskit/egress/bpf"
)

// TestFastTableVerdicts: the kernel's verdicts are the same whether the
// fast table holds every exact name or, overfilled (one bucket of 8 for
// 45 names), almost none: what it lacks is found in the hash map. A name
// of another user is refused either way, as is the bare parent of a
// wildcard and a name never asked.
func TestFastTableVerdicts(t *testing.T) {
	entries := []Entry{
		{UID: 0, Name: "www.example.lab"},
		{UID: 1001, Name: "bob.only.lab"},
		{UID: AllUsers, Name: "ntp.lab"},
		{UID: AllUsers, Name: "*.cdn.lab"},
	}
	var ours []string
	for i := range 40 {
		n := fmt.Sprintf("n%d.zero.lab", i)
		ours = append(ours, n)
		entries = append(entries, Entry{UID: 0, Name: n})
	}
	want := map[string]uint32{"www.example.lab": 1, "WWW.Example.LAB": 1, "ntp.lab": 1, "a.b.cdn.lab": 1,
		"bob.only.lab": 0, "cdn.lab": 0, "never.asked.lab": 0, "zero.lab": 0}
	for _, n := range ours {
		want[n] = 1
	}
	for _, size := range []struct {
		name    string
		buckets func(int) int
	}{{"sized", fastBuckets}, {"overfilled", func(int) int { return 1 }}} {
		t.Run(size.name, func(t *testing.T) {
			fastSize = size.buckets
			t.Cleanup(func() { fastSize = fastBuckets })
			objs := loadForRun(t, Enforce, entries)
			if got, want := int(objs.DnsAllowFast.MaxEntries()), size.buckets(len(entries)); got != want {
				t.Fatalf("fast table of %d buckets, want %d", got, want)
			}
			for name, w := range want {
				if got, _ := runProg(t, objs.DnsPolicy, ipv4UDP(53, query(name)), 1); got != w {
					t.Errorf("%s (uid 0): verdict %d, want %d", name, got, w)
				}
			}
		})
	}
}

// TestFastTableAgrees: the kernel finds in the fast table the
// fingerprints Go put there (the hash map emptied: only the table can
// allow), each for its own user: uid 0's names pass, bob's does not, and
// neither do the names only the hash map held (wildcards).
func TestFastTableAgrees(t *testing.T) {
	entries := []Entry{{UID: 0, Name: "www.example.lab"}, {UID: 1001, Name: "bob.only.lab"},
		{UID: AllUsers, Name: "ntp.lab"}, {UID: AllUsers, Name: "*.cdn.lab"}}
	objs := loadForRun(t, Enforce, entries)
	var k bpf.DnspolicyAllowKey
	for objs.DnsAllow.NextKey(nil, &k) == nil {
		if err := objs.DnsAllow.Delete(&k); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]uint32{"www.example.lab": 1, "WWW.EXAMPLE.lab": 1, "ntp.lab": 1,
		"bob.only.lab": 0, "a.cdn.lab": 0, "example.lab": 0}
	for name, w := range want {
		if got, _ := runProg(t, objs.DnsPolicy, ipv4UDP(53, query(name)), 1); got != w {
			t.Errorf("%s (uid 0), the fast table alone: verdict %d, want %d", name, got, w)
		}
	}
}
