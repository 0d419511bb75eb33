package plan

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestAppendDateIsFormat: the hand-made day is what time's layout
// "2006-01-02" gives, in any zone and at the ends of the 4-digit years.
func TestAppendDateIsFormat(t *testing.T) {
	zone := time.FixedZone("x", -11*3600)
	times := []time.Time{{}, time.Unix(0, 0), time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 3, 4, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 30, 23, 59, 0, 0, zone)}
	for i := range 2000 {
		times = append(times, time.Unix(int64(i)*86413*37, 0).In(zone))
	}
	for _, tm := range times {
		if got, want := string(appendDate(nil, tm)), tm.UTC().Format("2006-01-02"); got != want {
			t.Errorf("appendDate(%v) = %q, want %q", tm, got, want)
		}
	}
}

// TestCommentSlabKeepsComments: comments cut from one slab are the ones
// elementComment makes, and stay so as the slab fills (long and unclean
// names included).
func TestCommentSlabKeepsComments(t *testing.T) {
	var s commentSlab
	var got, want []string
	for i := range 5000 {
		f := store.Flow{FlowKey: store.FlowKey{UID: uint32(i), Proto: ProtoTCP, IP: netip.MustParseAddr("192.0.2.1"), Port: 443},
			Hits: uint64(i * 7), LastSeen: time.Unix(int64(i)*86400, 0)}
		switch i % 5 {
		case 1:
			f.Hostnames = []string{"svc" + strconv.Itoa(i) + ".example.com"}
		case 2:
			f.Hostnames = []string{strings.Repeat("long", 60) + ".example.com", "b.example.com"}
		case 3:
			f.Hostnames = []string{`bad"name` + strconv.Itoa(i), "é.example"}
		case 4:
			for j := range 20 {
				f.Hostnames = append(f.Hostnames, "n"+strconv.Itoa(j)+".example.org")
			}
		}
		got, want = append(got, s.comment(&f, i%3)), append(want, elementComment(&f, i%3))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("comment %d = %q, want %q", i, got[i], want[i])
		}
		if len(got[i]) > maxComment-1 || !cleanASCII(got[i], true) {
			t.Fatalf("comment %d is not one nft takes: %q", i, got[i])
		}
	}
}
