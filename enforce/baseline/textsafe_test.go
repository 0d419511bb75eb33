package baseline

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// TestProposalWriteEscapesNames: reconcile's proposal names destinations
// by the names DNS answers gave them (a local user chooses the question,
// a resolver's wildcard answers it) and by services: each is written
// escaped, so none forges a "+" line to approve or a terminal command.
func TestProposalWriteEscapesNames(t *testing.T) {
	now := time.Now()
	c := Change{UID: 1000, User: "alice", Hits: 3, LastSeen: now, Source: "candidate", Services: []string{"x\x1b[8m.service"},
		Dest: store.Dest{Proto: "tcp", IP: netip.MustParseAddr("10.0.0.1"), Port: 443, Hostnames: []string{"a.evil\n    + tcp 1.2.3.4:22  ok\t\xff"}}}
	p := &Proposal{Table: "egress", Now: now, Additions: []Change{c},
		Renamed: []Rename{{IP: netip.MustParseAddr("10.0.0.2"), Old: []string{"old\r"}, New: []string{"new\x1b]0;x\a"}}}}
	var b strings.Builder
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{`a.evil\n    + tcp 1.2.3.4:22  ok\t\xff`, `x\x1b[8m.service`, `old\r -> new\x1b]0;x\a`} {
		if !strings.Contains(out, want) {
			t.Errorf("proposal lacks %q:\n%s", want, out)
		}
	}
	if i := textsafe.Unsafe(out); i >= 0 {
		t.Fatalf("proposal writes %q raw at %d:\n%q", out[i:min(len(out), i+8)], i, out)
	}
}
