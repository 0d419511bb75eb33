//go:build linux

package namecheck

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestRecorderBounded: between two writes the name check's recorder holds
// at most store.MaxRefusals (destination, name) refusals: a local user
// presenting a new name at every connection adds none past it, and each
// such refusal is counted as lost (the store's refusals/~unrecorded); a
// refusal already held still counts; what a failed write gives back keeps
// the bound.
func TestRecorderBounded(t *testing.T) {
	r := newRecorder()
	at := time.Unix(1000, 0)
	ev := func(i int) Event {
		return Event{UID: 4242, IP: netip.MustParseAddr("192.0.2.1"), Proto: 6, Port: 443, Verdict: "mismatch", Kind: "tls",
			Name: fmt.Sprintf("n%d.example", i), Enforced: true}
	}
	const over = 7
	for i := range store.MaxRefusals + over {
		r.add(ev(i), at)
	}
	r.add(ev(0), at) // held: counted in its refusal
	if len(r.m) != store.MaxRefusals || r.lost != over {
		t.Fatalf("the recorder holds %d refusals, %d lost; want %d and %d", len(r.m), r.lost, store.MaxRefusals, over)
	}
	first := recKey{store.FlowKey{UID: 4242, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443}, "n0.example"}
	if ref := r.m[first]; ref == nil || ref.Dropped != 2 {
		t.Fatalf("the refusal held got %+v, want 2 dropped", ref)
	}
	rs, lost := r.take()
	if len(rs) != store.MaxRefusals || lost != over || len(r.m) != 0 || r.lost != 0 {
		t.Fatalf("take gave %d refusals, %d lost, and left %d, %d", len(rs), lost, len(r.m), r.lost)
	}
	r.add(ev(-1), at)
	r.giveBack(rs, lost)
	var left uint64 // the packets of the one refusal that found no room
	for _, ref := range rs {
		if r.m[recKey{ref.FlowKey, ref.Name}] == nil {
			left += ref.Dropped
		}
	}
	if len(r.m) != store.MaxRefusals || left == 0 || r.lost != over+left {
		t.Fatalf("after a give-back the recorder holds %d refusals, %d lost; want %d and %d", len(r.m), r.lost, store.MaxRefusals, over+left)
	}
}
