//go:build linux

package nft_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/nft/nfttest"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/monitor"
)

// collect gathers a collector's metrics by name and labels.
func collect(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if l.GetName() == "action" || l.GetName() == "structure" {
					labels = append(labels, l.GetValue())
				}
			}
			out[strings.Join(append([]string{f.GetName()}, labels...), " ")] += value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// TestDropLogIsRateLimitedCountersExact: with drop_log_rate 5/s, a burst
// of drops to 1,500 distinct destinations is dropped and counted in full,
// in enforce mode and in both staged modes; the log gets no more than the
// limit lets through, and the monitor's metrics say how many drops went
// unlogged: exactly the kernel's count less the logged ones.
func TestDropLogIsRateLimitedCountersExact(t *testing.T) {
	l := nfttest.NewLab(t)
	const n, rate, burstAllowance = 1500, 5, 5
	cases := []struct {
		name           string
		enforce, audit []uint32
		who            lab.As
	}{
		{"enforce", nil, nil, l.Nobody},
		{"staged-enforce-users", []uint32{65534}, nil, l.Nobody},
		{"staged-audit-users", nil, []uint32{4242}, l.Nobody},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := nfttest.Options(plan.ModeEnforce)
			o.DropLogRate, o.EnforceUIDs, o.AuditUIDs = rate, c.enforce, c.audit
			p := plan.Build(nfttest.Baseline(), o)
			if !strings.Contains(p.String(), fmt.Sprintf("counter limit rate %d/second counter log prefix %q", rate, plan.PrefixDrop)) {
				t.Fatalf("the drop log is not limited:\n%s", p)
			}
			if _, err := nft.Open(l.Target).Apply(p); err != nil {
				t.Fatal(err)
			}
			mon := monitor.NewMonitor()
			ctx, cancel := context.WithCancel(context.Background())
			ready, done := make(chan struct{}), make(chan error, 1)
			go func() { done <- monitor.Watch(ctx, l.Target, mon, monitor.WatchOptions{Group: 77, Ready: ready}) }()
			t.Cleanup(func() { cancel(); <-done })
			<-ready

			start := time.Now()
			sent, failed := nfttest.Burst(t, c.who, 20000+i*n, n)
			elapsed := time.Since(start)
			if sent != 0 || failed != n {
				t.Errorf("%d of %d datagrams went out; every one must be dropped", sent, n)
			}
			st, err := nft.Open(l.Target).Status(plan.DefaultTable, false)
			if err != nil {
				t.Fatal(err)
			}
			if st.Dropped.Packets != n || st.DropsLogged == nil {
				t.Fatalf("the kernel counted %d drops (logged counter %v), want %d: the counter must see every packet", st.Dropped.Packets, st.DropsLogged, n)
			}
			logged := st.DropsLogged.Packets
			t.Logf("%d datagrams in %v: %d dropped, %d logged", n, elapsed.Round(time.Millisecond), st.Dropped.Packets, logged)
			// The limit passes at most rate a second plus its burst.
			if most := uint64(burstAllowance + rate*(int(elapsed.Seconds())+1)); logged > most {
				t.Errorf("%d drops logged in %v, the limit allows %d", logged, elapsed, most)
			}
			// The monitor receives the logged ones.
			lab.WaitFor(t, func() bool { return mon.Stats().Entries >= logged })
			m := collect(t, &monitor.Collector{Monitor: mon, Target: l.Target, Table: plan.DefaultTable})
			if got := m["egress_unlogged_packets_total drop"]; got != float64(n-logged) {
				t.Errorf("unlogged drops metric %v, want %d - %d", got, n, logged)
			}
			if got := m["egress_denied_packets_total drop"]; got != float64(mon.Stats().Entries) || got != float64(logged) {
				t.Errorf("the monitor counted %v drops, the kernel logged %d", got, logged)
			}
		})
	}
}

// TestPlanBeforeDropLogRateRestoresItsDrop: a plan recorded before
// drop_log_rate (no drop rule of its own; the log rule dropped) renders as
// it did, by text and by netlink, and still drops for its enforced users.
func TestPlanBeforeDropLogRateRestoresItsDrop(t *testing.T) {
	l := nfttest.NewLab(t)
	o := nfttest.Options(plan.ModeEnforce)
	o.EnforceUIDs = []uint32{65534}
	p := plan.Build(nfttest.Baseline(), o)
	// What the older binary recorded.
	p.DropLogRate = 0
	var rules []plan.Rule
	for _, r := range p.Rules {
		if r.Kind != plan.RuleDrop {
			r.Text = p.RuleText(&r)
			rules = append(rules, r)
		}
	}
	p.Rules = rules
	text := p.String()
	if !strings.Contains(text, `meta skuid @enforce_users counter log prefix "NFT-EGRESS-DROP " group 77 drop`) {
		t.Fatalf("the old plan renders differently:\n%s", text)
	}
	byText := lab.NewNetns(t)
	nfttest.LoadText(t, p, byText)
	if _, err := nft.Open(l.Target).Apply(p); err != nil {
		t.Fatal(err)
	}
	if a, b := lab.ListTable(t, byText, plan.DefaultTable), lab.ListTable(t, &lab.Netns{Name: l.Target.Netns}, plan.DefaultTable); a != b {
		t.Errorf("listings differ\n--- nft -f:\n%s\n--- netlink:\n%s", a, b)
	}
	if sent, failed := nfttest.Burst(t, l.Nobody, 30000, 20); sent != 0 || failed != 20 {
		t.Errorf("the enforced user sent %d of 20 unlearned datagrams", sent)
	}
}
