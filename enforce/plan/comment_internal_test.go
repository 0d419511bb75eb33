package plan

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestCommentsFitAndSayWhy: an element's comment says its hits, last
// seen day and names, fits nft's limit, and holds only what a comment
// may.
func TestCommentsFitAndSayWhy(t *testing.T) {
	var names []string
	for i := 0; i < 30; i++ {
		names = append(names, "a-rather-long-host-name-number-"+string(rune('a'+i))+".example.com")
	}
	f := store.Flow{FlowKey: store.FlowKey{UID: 1, Proto: ProtoTCP, IP: netip.MustParseAddr("192.0.2.1"), Port: 443},
		Hits: 1234, LastSeen: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), Hostnames: append(names, `bad"name`)}
	c := elementComment(&f, 0)
	if len(c) > maxComment-1 {
		t.Errorf("comment of %d bytes: %q", len(c), c)
	}
	for _, w := range []string{"hits 1234", "last 2026-11-20", names[0], "+30"} {
		if !strings.Contains(c, w) {
			t.Errorf("comment %q lacks %q", c, w)
		}
	}
	if s := sanitizeComment(`a"b\c` + "\n"); s != "a?b?c?" {
		t.Errorf("sanitize = %q", s)
	}
}
