//go:build linux

package namecheck_test

import (
	"encoding/hex"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/learn"
	"github.com/egresskit/egress/namecheck"
)

// newTailLab is the lab of newLabWith(t, true), but with the learner's
// arrangement: the name check's learning program is loaded without being
// attached (Config.NoAttach) and runs from the learner probe's egress
// program by a tail call.
func newTailLab(t *testing.T) (*nlab, *learn.Probe) {
	lab.Require(t)
	l := &nlab{t: t, pair: lab.NewPair(t), cg: lab.NewCgroup(t), learn: true}
	l.serve(t)
	p, err := learn.OpenProbe(l.cg.Path, learn.DefaultProbeOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if l.nc, err = namecheck.Start(namecheck.Config{Cgroup: l.cg.Path, Learn: true, NoAttach: true}); err != nil {
		t.Fatal(err)
	}
	l.readEvents()
	t.Cleanup(func() { l.detach(t) })
	if err := p.SetNames(l.nc.Program()); err != nil {
		t.Fatal(err)
	}
	l.client = copyClient(t)
	return l, p
}

// egressPrograms counts the programs attached to the cgroup's egress hook.
func egressPrograms(t *testing.T, cg *lab.Cgroup) int {
	t.Helper()
	res, err := link.QueryPrograms(link.QueryOptions{Target: cg.FD(), Attach: ebpf.AttachCGroupInetEgress})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Programs)
}

// TestLearnModeByTailCall: run from the learner's egress program, the
// name check's learning mode still tells every name presented (TLS, a
// ClientHello split over two segments, HTTP, IPv6 packets with an
// extension header, which the egress program cannot tell from their
// headers in place), and no name for other first data; the cgroup's
// egress hook runs one program.
func TestLearnModeByTailCall(t *testing.T) {
	l, _ := newTailLab(t)
	if n := egressPrograms(t, l.cg); n != 1 {
		t.Fatalf("%d programs on the egress hook, want the learner's one", n)
	}
	for _, c := range []struct{ mode, name, port string }{
		{"tls", "name2.lab", "443"}, {"tls-split", "name1.lab", "443"}, {"http", "name2.lab", "80"},
	} {
		l.answered(c.mode+" "+c.name, c.mode, c.name, c.port)
	}
	_, _ = l.as().Run(l.cmd("raw", hex.EncodeToString([]byte("\x00garbage")), "443")...)
	raw := lab.As{UID: userA, GID: userA, Netns: l.pair.Client, Cgroup: l.cg, Caps: []string{"net_raw"}}
	addr := net.JoinHostPort(lab.ServerIP6, "443")
	if out := raw.MustRun(t, "env", "NC_CLIENT=1", l.client, "tls+dstopts", "name3.lab", addr); out != "hello name3.lab" {
		t.Fatalf("a destination options header: %q", out)
	}
	lab.Await(t, "the names seen", func() bool {
		return len(l.eventsFor("name2.lab")) == 2 && len(l.eventsFor("name1.lab")) == 1 && len(l.eventsFor("name3.lab")) == 1
	})
	lab.Await(t, "the garbage seen without a name", func() bool { return len(l.eventsFor("")) == 1 })
	for _, e := range append(append(l.eventsFor("name2.lab"), l.eventsFor("name3.lab")...), l.eventsFor("")...) {
		if e.Verdict != "seen" || e.Enforced || e.UID != userA {
			t.Errorf("event %+v", e)
		}
	}
	if e := l.eventsFor("name3.lab")[0]; e.IP.String() != lab.ServerIP6 || e.Port != 443 {
		t.Errorf("the IPv6 connection's event %+v", e)
	}
	if s := l.stats(); s.Dropped != 0 || s.Checked != 5 {
		t.Errorf("stats %+v, want 5 checked, none dropped", s)
	}
}

// TestLearnNamesTakenOut: with the probe's slot emptied (SetNames(nil))
// no name is told, and the connections pass; put back, names are told
// again.
func TestLearnNamesTakenOut(t *testing.T) {
	l, p := newTailLab(t)
	if err := p.SetNames(nil); err != nil {
		t.Fatal(err)
	}
	l.answered("without the name check", "tls", "name2.lab", "443")
	if err := p.SetNames(l.nc.Program()); err != nil {
		t.Fatal(err)
	}
	l.answered("with the name check", "tls", "name1.lab", "443")
	// One ring, in order: name1's event came after any of name2's.
	lab.Await(t, "name1 seen", func() bool { return len(l.eventsFor("name1.lab")) == 1 })
	if ev := l.eventsFor("name2.lab"); len(ev) != 0 {
		t.Fatalf("a name told while the slot was empty: %+v", ev)
	}
}
