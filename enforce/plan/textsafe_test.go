package plan

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// TestDiffWriteEscapesNames: an element's comment carries the names DNS
// answers gave its flow; it is cleaned when made (clean: '?' for what nft
// text cannot hold), so "plan --diff" shows no forged "+" line and no
// terminal command. (A guard: it passed before textsafe too.)
func TestDiffWriteEscapesNames(t *testing.T) {
	f := store.Flow{FlowKey: store.FlowKey{UID: 1000, Proto: 6, IP: netip.MustParseAddr("10.0.0.1"), Port: 443}, Hits: 1,
		LastSeen: time.Now(), Hostnames: []string{"a.evil\n+ 0 . 1.2.3.4 . tcp . 22  # ok\x1b[8m"}}
	p := Build([]store.Flow{f}, Options{Mode: ModeAudit, Now: time.Now()})
	var b strings.Builder
	if err := Compare(Installed{Present: true, Mode: ModeAudit}, p).Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if want := `a.evil?+ 0 . 1.2.3.4 . tcp . 22  # ok?[8m`; !strings.Contains(out, want) {
		t.Errorf("diff lacks %q:\n%s", want, out)
	}
	if i := textsafe.Unsafe(out); i >= 0 {
		t.Fatalf("diff writes %q raw at %d:\n%q", out[i:min(len(out), i+8)], i, out)
	}
}
