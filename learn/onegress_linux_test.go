//go:build linux

package learn

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/egresskit/egress/internal/lab"
)

// TestOneEgressProgram: the learner puts one program on the cgroup's
// egress hook (the name check's learning part runs from it by a tail
// call), and in the same run still counts every connection exactly,
// records the name each presents and the DNS names of its address, and
// loses nothing.
func TestOneEgressProgram(t *testing.T) {
	lab.Require(t, "curl")
	d := newDNSLab(t)
	lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(map[string]chan struct{}{"name1.lab": nil}))
	r := startRun(t, d.config(DefaultProbeOptions()))
	res, err := link.QueryPrograms(link.QueryOptions{Target: d.cg.FD(), Attach: ebpf.AttachCGroupInetEgress})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Programs) != 1 {
		t.Errorf("%d programs on the egress hook, want 1", len(res.Programs))
	}
	const n = 5
	for range n {
		d.victim.MustRun(t, "curl", "-sS", "-4", "http://name1.lab:8080/")
	}
	sum := r.stop(t)
	flows, _ := flowsOf(t, d.db)
	f, ok := flows["65534 tcp "+lab.ServerIP4+":8080"]
	if !ok {
		t.Fatal("the flow was not recorded")
	}
	if f.Hits != n {
		t.Errorf("hits %d, want %d connections", f.Hits, n)
	}
	if !slices.Equal(f.Hostnames, []string{"name1.lab"}) || !slices.Equal(f.Presented, []string{"name1.lab"}) {
		t.Errorf("hostnames %v, presented %v", f.Hostnames, f.Presented)
	}
	if l := sum.Probe.Lost() + sum.Probe.DNSLost + sum.Probe.DNSQueryLost; l != 0 {
		t.Errorf("lost %d: %+v", l, sum.Probe)
	}
}
