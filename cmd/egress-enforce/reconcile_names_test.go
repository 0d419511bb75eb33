package main

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/store"
)

// TestReconcileNamesDeniedFlowsLikeTheLearner: the monitor saw the victim
// (65534) denied on an address another user (4242) resolved from a name
// it controls. The denied destination, added with --include-denied, must
// not carry that name (it would become a name rule of the victim's), only
// the names the learner would give the flow: the victim's own lookups, or
// a trusted resolver's.
func TestReconcileNamesDeniedFlowsLikeTheLearner(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "baseline.db")
	st, err := store.Create(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	victim4, victim6 := netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::9")
	err = st.Apply(&store.Batch{DNS: []store.DNSObservation{
		{IP: victim4, Names: []string{"evil.example"}, TTL: 60, UID: 4242, Seen: now},
		{IP: victim6, Names: []string{"evil.example"}, TTL: 60, UID: 4242, Seen: now},
		{IP: victim6, Names: []string{"api.example"}, TTL: 60, UID: 4343, Seen: now},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var obs []store.Observation
	for _, ip := range []netip.Addr{victim4, victim6} {
		obs = append(obs, store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 65534, Proto: 6, IP: ip, Port: 443},
			Hits: 3, FirstSeen: now, LastSeen: now})
	}
	obs = append(obs, store.Observation{Kind: store.ObsDrop, FlowKey: store.FlowKey{UID: 4242, Proto: 6, IP: victim4, Port: 443},
		Hits: 1, FirstSeen: now, LastSeen: now})
	if err := st.AddObservations(obs, nil); err != nil {
		t.Fatal(err)
	}
	env := []string{"EGRESS_DB=" + db, "EGRESS_DNS_RESOLVER_USERS=4343"}
	var p baseline.Proposal
	if err := json.Unmarshal([]byte(mustRun(t, enforceBin, env, "reconcile", "--json", "--include-denied")), &p); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, a := range p.Denied {
		got[netip.AddrPortFrom(a.IP, a.Port).String()+" "+a.User] = a.Hostnames
	}
	for k, want := range map[string][]string{
		"192.0.2.9:443 nobody":     {},
		"[2001:db8::9]:443 nobody": {"api.example"},
		"192.0.2.9:443 4242":       {"evil.example"}, // its own lookup
	} {
		if names, ok := got[k]; !ok || !slices.Equal(names, want) {
			t.Errorf("denied %s: names %v (present %v), want %v; denied %+v", k, names, ok, want, p.Denied)
		}
	}
	nft := filepath.Join(dir, "next.nft")
	mustRun(t, enforceBin, env, "reconcile", "--include-denied", "-o", nft)
	text, err := os.ReadFile(nft)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if strings.Contains(line, "uid 65534") && strings.Contains(line, "evil.example") {
			t.Errorf("the next generation lets the victim follow the attacker's name: %q", line)
		}
	}
}
