package baseline

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestDeniedServicesStayServices: a destination only the monitor saw,
// sent by a service, is proposed for that service; included, the next
// table (match service) allows it for the service, not for every
// process of the user.
func TestDeniedServicesStayServices(t *testing.T) {
	approved := rflow(0, "192.0.2.1", 443, 5, tp, tp, 1)
	approved.Cgroups = []string{"/system.slice/pay.service"}
	k := store.FlowKey{UID: 0, Proto: plan.ProtoTCP, IP: netip.MustParseAddr("192.0.2.9"), Port: 443}
	obs := []store.Observation{{Kind: store.ObsDrop, FlowKey: k, Hits: 3, FirstSeen: tp, LastSeen: tp, Services: []string{"system.slice/backup.service"}}}
	p := Reconcile([]store.Flow{approved}, obs, nil, 1, ReconcileOptions{Now: tp, IncludeDenied: true})
	if len(p.Denied) != 1 || !slices.Equal(p.Denied[0].Services, []string{"system.slice/backup.service"}) {
		t.Fatalf("denied %+v", p.Denied)
	}
	next := plan.Build(p.Next(), plan.Options{Now: tp, Match: plan.MatchService})
	if got := next.Services(); got["system.slice/backup.service"] != 1 || got["system.slice/pay.service"] != 1 {
		t.Errorf("services of the next plan: %v", got)
	}
	if n := len(next.Sets[0].Elements); n != 0 {
		t.Errorf("the next plan allows %d flows per user: %+v", n, next.Sets[0].Elements)
	}
}
