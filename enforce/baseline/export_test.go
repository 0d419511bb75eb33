package baseline

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/store"
)

// TestCheckExport: what "generate --from" refuses, and what it leaves out.
func TestCheckExport(t *testing.T) {
	for name, export := range plantest.HostileExports {
		var e store.Export
		if err := json.Unmarshal([]byte(export), &e); err != nil {
			t.Fatal(err)
		}
		warnings, err := CheckExport(&e)
		if name == "names" {
			// A user name is refused; once fixed, a hostname that is not a
			// DNS name is only left out, with a warning.
			if err == nil || !strings.Contains(err.Error(), "not a user name") {
				t.Errorf("%s: err = %v", name, err)
			}
			e.Users = map[uint32]string{0: "root", 1: "machine$", 2: "www-data"}
			warnings, err = CheckExport(&e)
			if err != nil || len(warnings) != 1 || !slices.Equal(e.Flows[0].Hostnames, []string{"ok.example"}) {
				t.Errorf("%s: %v %q %v", name, err, warnings, e.Flows[0].Hostnames)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted (warnings %q)", name, warnings)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: the error holds a newline: %q", name, err)
		}
	}
	e := store.Export{Host: "web-1.example", Flows: []store.Flow{{FlowKey: store.FlowKey{Proto: plan.ProtoTCP, IP: netip.MustParseAddr("::ffff:192.0.2.1"), Port: 1}}}}
	if _, err := CheckExport(&e); err != nil || !e.Flows[0].IP.Is4() {
		t.Errorf("a mapped address: %v %v", err, e.Flows[0].IP)
	}
	e.Flows[0].Proto = 0
	if _, err := CheckExport(&e); err == nil {
		t.Error("a flow without a protocol was accepted")
	}
}

// TestReconcileListsDeniedApart: a destination only the monitor saw
// denied is listed apart and joins the next baseline only when included.
func TestReconcileListsDeniedApart(t *testing.T) {
	approved := rflow(1, "192.0.2.1", 443, 5, tp, tp, 1)
	knock := store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 1, Proto: plan.ProtoTCP, IP: netip.MustParseAddr("198.51.100.9"), Port: 8443},
		Hits: 1, FirstSeen: tp, LastSeen: tp}
	p := Reconcile([]store.Flow{approved}, []store.Observation{knock}, nil, 1, ReconcileOptions{MinHits: 1, Now: tp})
	if len(p.Additions) != 0 || len(p.Denied) != 1 || !p.Empty() || len(p.Next()) != 1 {
		t.Errorf("without --include-denied: additions %v, denied %v, next %v", p.Additions, p.Denied, p.Next())
	}
	var b strings.Builder
	_ = p.Write(&b)
	if !strings.Contains(b.String(), "? tcp 198.51.100.9:8443") || !strings.Contains(b.String(), "--include-denied") {
		t.Errorf("proposal text:\n%s", b.String())
	}
	p = Reconcile([]store.Flow{approved}, []store.Observation{knock}, nil, 1, ReconcileOptions{MinHits: 1, Now: tp, IncludeDenied: true})
	if len(p.Adding()) != 1 || p.Empty() || len(p.Next()) != 2 {
		t.Errorf("with --include-denied: adding %v, next %v", p.Adding(), p.Next())
	}
}
