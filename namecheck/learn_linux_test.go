//go:build linux

package namecheck_test

import (
	"encoding/hex"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// TestLearnMode: the learner's mode tells every name presented (TLS,
// split TLS, HTTP) and refuses nothing, whatever the destinations.
func TestLearnMode(t *testing.T) {
	l := newLabWith(t, true)
	for _, c := range []struct{ mode, name, port string }{
		{"tls", "name2.lab", "443"}, {"tls-split", "name1.lab", "443"}, {"http", "name2.lab", "80"},
	} {
		l.answered(c.mode+" "+c.name, c.mode, c.name, c.port)
	}
	_, _ = l.as().Run(l.cmd("raw", hex.EncodeToString([]byte("\x00garbage")), "443")...)
	lab.Await(t, "the names seen", func() bool { return len(l.eventsFor("name2.lab")) == 2 && len(l.eventsFor("name1.lab")) == 1 })
	lab.Await(t, "the garbage seen without a name", func() bool { return len(l.eventsFor("")) == 1 })
	for _, e := range append(l.eventsFor("name2.lab"), l.eventsFor("")...) {
		if e.Verdict != "seen" || e.Enforced || e.UID != userA {
			t.Errorf("event %+v", e)
		}
	}
	if s := l.stats(); s.Dropped != 0 {
		t.Errorf("learning dropped: %+v", s)
	}
}
