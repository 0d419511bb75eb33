package namecheck_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/namecheck"
	"github.com/egresskit/egress/store"
)

// TestNameCheckManyNamesOnOnePort: a user who learned many names on one
// port (a crawler, or a local user resolving names of their own making)
// gets one name-checked element per address, each with its own names,
// and the follow rules of that port once, in the user's template, which
// the kernel consults at every check. Copying the user's rules into each
// element made n elements hold n names each: the plan's name checks grew
// as n² (cubic to make), and past ~512 names the kernel maps refused the
// set, leaving the name check at its previous destinations.
func TestNameCheckManyNamesOnOnePort(t *testing.T) {
	l := newLab(t)
	now := time.Now()
	const n = 600
	flows := []store.Flow{{FlowKey: store.FlowKey{UID: userA, IP: netip.MustParseAddr(lab.ServerIP4), Proto: plan.ProtoTCP, Port: 443},
		Hits: 5, FirstSeen: now, LastSeen: now, Hostnames: []string{"name1.lab"}}}
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		flows = append(flows, store.Flow{FlowKey: store.FlowKey{UID: userA, IP: ip, Proto: plan.ProtoTCP, Port: 443},
			Hits: 5, FirstSeen: now, LastSeen: now, Hostnames: []string{fmt.Sprintf("host%d.crawl.lab", i)}})
	}
	follow := &plan.FollowOptions{Mode: plan.FollowBoth, Names: []plan.NameRule{{UID: userA, Name: "name2.lab", Proto: plan.ProtoTCP, Port: 443}}}
	p := plan.Build(flows, plan.Options{Mode: plan.ModeEnforce, NameCheck: plan.NameCheckEnforce, Follow: follow, Now: now})
	checks, followed := p.NameChecks(), p.FollowNameChecks()
	names := 0
	for _, c := range checks {
		names += len(c.Names)
	}
	if len(checks) != n+1 || names != n+1 || len(followed) != 1 || len(followed[0].Names) != n+2 {
		t.Fatalf("%d name checks with %d names, %d templates (want %d, %d, one with %d names)", len(checks), names, len(followed), n+1, n+1, n+2)
	}
	if err := l.nc.Set(namecheck.Dests(append(checks, followed...))); err != nil {
		t.Fatal(err)
	}
	// At the learned address: its own name, a rule of the user's on that
	// port (from the template), not another name.
	l.answered("the element's own name", "tls", "name1.lab", "443")
	l.answered("a follow rule of the user on that port", "tls", "name2.lab", "443")
	l.answered("a name the user learned at another address", "tls", "host7.crawl.lab", "443")
	l.blocked("tls", "name3.lab", "443")
}
