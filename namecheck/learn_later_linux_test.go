//go:build linux

package namecheck_test

import (
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestLearnByTailCallLaterSegments: the learner's egress program leaves
// the data segments of a socket past its first bytes without the tail
// call (tcp_past_name in bpf/tcpkind.h), but a name that comes in a later
// segment than the first is still told: a ClientHello whose first 7
// bytes go one a segment (the name in the socket's 8th data segment) and
// an HTTP request whose name starts a segment sent 4080 bytes into the
// stream, after 4080 bytes acknowledged in several segments (16 short of
// the 4096 the name check gathers). A check that let only the first
// segments or the first MSS through would lose both names.
func TestLearnByTailCallLaterSegments(t *testing.T) {
	l, _ := newTailLab(t)
	before := l.stats()
	l.answered("tls-drip7", "tls-drip7", "name1.lab", "443")
	l.answered("http-late", "http-late", "name2.lab", "80")
	lab.Await(t, "the names seen", func() bool {
		return len(l.eventsFor("name1.lab")) == 1 && len(l.eventsFor("name2.lab")) == 1
	})
	for _, e := range append(l.eventsFor("name1.lab"), l.eventsFor("name2.lab")...) {
		if e.Verdict != "seen" || e.UID != userA {
			t.Errorf("event %+v", e)
		}
	}
	if ev := l.eventsFor(""); len(ev) != 0 {
		t.Errorf("a connection told without a name: %+v", ev)
	}
	if s := l.stats(); s.Checked != before.Checked+2 || s.Gathered < before.Gathered+8 {
		t.Errorf("stats %+v (before %+v), want 2 more checked, 8 more segments gathered", s, before)
	}
}
