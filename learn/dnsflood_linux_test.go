//go:build linux

package learn

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egresskit/egress/internal/lab"
)

// TestLearnerDNSFloodIsBounded: a local user (4242) of the learner's cgroup
// asks a server of its own for a name whose answer gives 30 addresses;
// with the bound of the DNS observations between two flushes lowered to
// 10, the learner keeps 10 of them, and the run counts the other 20
// (dns_unrecorded).
func TestLearnerDNSFloodIsBounded(t *testing.T) {
	lab.Require(t, "dig")
	saved := maxPendingDNS
	maxPendingDNS = 10
	t.Cleanup(func() { maxPendingDNS = saved })
	pair := lab.NewPair(t)
	cg := lab.NewCgroup(t)
	const n = 30
	lab.ServeDNS(t, pair.Server, lab.ServerIP4+":53", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range n {
			m.Answer = append(m.Answer, lab.A(r.Question[0].Name, fmt.Sprintf("10.99.0.%d", i+1), 60))
		}
		_ = w.WriteMsg(m)
	})
	db := filepath.Join(t.TempDir(), "baseline.db")
	r := startRun(t, Config{DB: db, Cgroup: cg.Path, Flush: time.Hour, Filter: Filter{Loopback: true},
		Probe: DefaultProbeOptions(), NoPresentedNames: true})
	attacker := lab.As{UID: 4242, GID: 4242, Netns: pair.Client, Cgroup: cg}
	out := attacker.MustRun(t, "dig", "+short", "+tries=1", "@"+lab.ServerIP4, "flood.lab", "A")
	if got := len(strings.Fields(out)); got != n {
		t.Fatalf("dig got %d addresses, want %d:\n%s", got, n, out)
	}
	sum := r.stop(t)

	_, snap := flowsOf(t, db)
	kept := 0
	for _, e := range snap.DNS {
		for _, nm := range e.Names {
			if nm.Name == "flood.lab" {
				kept++
			}
		}
	}
	if kept != 10 {
		t.Errorf("%d addresses of flood.lab recorded, want the bound 10", kept)
	}
	if got := sum.Run.DNSUnrecorded; got != n-10 {
		t.Errorf("the run counts %d DNS observations unrecorded, want %d", got, n-10)
	}
}
