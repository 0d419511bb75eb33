//go:build linux

package learn

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestPresentedNamesAndFronting: the learner records the name each
// connection presents (HTTP Host here) beside the DNS names of its flow,
// and a name presented through another name's address is fronted.
func TestPresentedNamesAndFronting(t *testing.T) {
	lab.Require(t, "curl")
	d := newDNSLab(t)
	lab.ServeDNS(t, d.pair.Server, lab.ServerIP4+":53", answerNames(map[string]chan struct{}{"name1.lab": nil}))
	r := startRun(t, d.config(DefaultProbeOptions()))
	d.victim.MustRun(t, "curl", "-sS", "-4", "http://name1.lab:8080/")
	d.victim.MustRun(t, "curl", "-sS", "-4", "--connect-to", "name2.lab:8080:name1.lab:8080", "http://name2.lab:8080/")
	r.stop(t)
	flows, _ := flowsOf(t, d.db)
	f, ok := flows["65534 tcp "+lab.ServerIP4+":8080"]
	if !ok {
		t.Fatal("the flow was not recorded")
	}
	slices.Sort(f.Presented)
	if !slices.Equal(f.Hostnames, []string{"name1.lab"}) || !slices.Equal(f.Presented, []string{"name1.lab", "name2.lab"}) {
		t.Fatalf("hostnames %v, presented %v", f.Hostnames, f.Presented)
	}
	if fr := f.Fronted(); !slices.Equal(fr, []string{"name2.lab"}) {
		t.Fatalf("fronted %v", fr)
	}
}

func TestReportShowsFronting(t *testing.T) {
	f := store.Flow{FlowKey: store.FlowKey{UID: 7, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443},
		Hits: 1, Hostnames: []string{"Name1.lab."}, Presented: []string{"name1.lab", "name2.lab"}}
	rows := BuildReport([]store.Flow{f}, ReportOptions{})
	var b strings.Builder
	if err := WriteReportTable(&b, rows, nil, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "presented: name1.lab,name2.lab; FRONTED: name2.lab is not among the DNS names") {
		t.Errorf("report:\n%s", b.String())
	}
	if !slices.Equal(rows[0].Fronted, []string{"name2.lab"}) {
		t.Errorf("fronted %v", rows[0].Fronted)
	}
}
