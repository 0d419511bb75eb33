//go:build linux

package learn

import (
	"fmt"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// The programs keep a state per UDP socket and let the packets of a socket
// with nothing to do pass after a few instructions. These tests check that
// no socket that matters takes that short way.

// TestDNSSocketFromBeforeTheLearner: a DNS client's socket is made and
// connected before the learner attaches (it has no state yet), and asks
// only afterwards: its query is still seen by its port, so the answer
// names the flow.
func TestDNSSocketFromBeforeTheLearner(t *testing.T) {
	d := newDNSLab(t)
	lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(map[string]chan struct{}{"early.lab": nil}))
	p := startPeer(t, d.victim, d.bin, "ask", "-server", lab.ServerIP4+":53", "-name", "early.lab", "-id", "31", "-connect", "-hold")
	p.expect("socket")
	r := startRun(t, d.config(DefaultProbeOptions()))
	fmt.Fprintln(p.stdin, "go")
	p.ready()
	p.expect("got " + lab.ServerIP4 + ":53 31")
	p.close()

	d.victimNamedOnly(t, r, 1, "early.lab")
}

// TestSocketTurnsToDNS: an unconnected socket first sends a datagram that
// is no DNS query (the socket then has nothing to do on its packets), then
// asks a DNS server: the query and its answer are seen.
func TestSocketTurnsToDNS(t *testing.T) {
	d := newDNSLab(t)
	lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(map[string]chan struct{}{"later.lab": nil}))
	lab.ListenUDP(t, d.pair.Server, lab.ServerIP4+":9999")
	r := startRun(t, d.config(DefaultProbeOptions()))
	p := startPeer(t, d.victim, d.bin, "ask", "-server", lab.ServerIP4+":53", "-name", "later.lab", "-id", "32",
		"-before", lab.ServerIP4+":9999")
	p.ready()
	p.expect("got " + lab.ServerIP4 + ":53 32")
	p.close()

	d.victimNamedOnly(t, r, 1, "later.lab")
	flows, _ := flowsOf(t, d.db)
	if f, ok := flows["65534 udp "+lab.ServerIP4+":9999"]; !ok || f.Hits != 1 {
		t.Errorf("the datagram before the query: flow %+v (recorded %v), want 1 hit", f, ok)
	}
}
