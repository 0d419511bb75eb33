//go:build linux

package monitor

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// TestDeniedWriteEscapesOutsideStrings: the names in "denied" come from
// the outside (a DNS answer's names, a process name a user chose, the name
// a TLS client presented, a service's cgroup): each is written escaped, so
// none makes a row, a line or a terminal command of its own.
func TestDeniedWriteEscapesOutsideStrings(t *testing.T) {
	now := time.Now()
	s := &DeniedSummary{
		Until: now, Dropped: 1, Table: "egress",
		Destinations: []DeniedDest{{UID: 1000, User: "alice\x1b[2J",
			Dest:    store.Dest{Proto: "tcp", IP: netip.MustParseAddr("10.0.0.1"), Port: 443, Hostnames: []string{"a.evil\n  root\t0\t1"}},
			Dropped: 1, LastSeen: now, Processes: []string{"/tmp/x\tfake"}, Comms: []store.ProcessComm{{Exe: "/tmp/x\tfake", Comm: "sshd\u202e"}},
			Services: []string{"evil\n.service"}}},
		Users:        []DeniedUser{{UID: 1000, User: "alice\x1b[2J", Dropped: 1, Destinations: 1}},
		RefusedNames: []RefusedName{{UID: 1000, User: "alice\x1b[2J", Proto: "tcp", IP: netip.MustParseAddr("10.0.0.2"), Port: 443, Kind: "tls", Presented: "x\x1b]0;pwned\a\xff", Dropped: 1, LastSeen: now}},
	}
	var b strings.Builder
	if err := s.Write(&b, 10); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{`alice\x1b[2J`, `a.evil\n  root\t0\t1`, `/tmp/x\tfake (sshd\u202e)`, `evil\n.service`, `x\x1b]0;pwned\a\xff`} {
		if !strings.Contains(out, want) {
			t.Errorf("denied lacks %q:\n%s", want, out)
		}
	}
	if i := textsafe.Unsafe(out); i >= 0 {
		t.Fatalf("denied writes %q raw at %d:\n%q", out[i:min(len(out), i+8)], i, out)
	}
}
