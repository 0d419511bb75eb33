//go:build linux

package enforce

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// burst sends one UDP datagram to each of n ports of the server as a, from
// bash (a redirection to /dev/udp per datagram), and returns how many
// sends succeeded and failed: a packet the output hook drops fails with
// EPERM.
func burst(t *testing.T, a lab.As, first, n int) (ok, failed int) {
	t.Helper()
	script := fmt.Sprintf(`ok=0; no=0; for p in $(seq %d %d); do if echo x 2>/dev/null >/dev/udp/%s/$p; then ok=$((ok+1)); else no=$((no+1)); fi; done; echo $ok $no`,
		first, first+n-1, lab.ServerIP4)
	out := a.MustRun(t, "bash", "-c", script)
	if _, err := fmt.Sscan(out, &ok, &failed); err != nil {
		t.Fatalf("burst printed %q", out)
	}
	return ok, failed
}

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
	l := newEnforceLab(t)
	const n, rate, burstAllowance = 1500, 5, 5
	cases := []struct {
		name           string
		enforce, audit []uint32
		who            lab.As
	}{
		{"enforce", nil, nil, l.nobody},
		{"staged-enforce-users", []uint32{65534}, nil, l.nobody},
		{"staged-audit-users", nil, []uint32{4242}, l.nobody},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := labOptions(ModeEnforce)
			o.DropLogRate, o.EnforceUIDs, o.AuditUIDs = rate, c.enforce, c.audit
			p := Build(labBaseline(), o)
			if !strings.Contains(p.String(), fmt.Sprintf("counter limit rate %d/second counter log prefix %q", rate, PrefixDrop)) {
				t.Fatalf("the drop log is not limited:\n%s", p)
			}
			if _, err := Apply(p, l.target); err != nil {
				t.Fatal(err)
			}
			mon := NewMonitor()
			ctx, cancel := context.WithCancel(context.Background())
			ready, done := make(chan struct{}), make(chan error, 1)
			go func() { done <- Watch(ctx, l.target, mon, WatchOptions{Group: 77, Ready: ready}) }()
			t.Cleanup(func() { cancel(); <-done })
			<-ready

			start := time.Now()
			sent, failed := burst(t, c.who, 20000+i*n, n)
			elapsed := time.Since(start)
			if sent != 0 || failed != n {
				t.Errorf("%d of %d datagrams went out; every one must be dropped", sent, n)
			}
			st, err := ReadStatus(l.target, DefaultTable, false)
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
			m := collect(t, &Collector{Monitor: mon, Target: l.target, Table: DefaultTable})
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
	l := newEnforceLab(t)
	o := labOptions(ModeEnforce)
	o.EnforceUIDs = []uint32{65534}
	p := Build(labBaseline(), o)
	// What the older binary recorded.
	p.DropLogRate = 0
	var rules []Rule
	for _, r := range p.Rules {
		if r.Kind != RuleDrop {
			r.Text = p.ruleText(&r)
			rules = append(rules, r)
		}
	}
	p.Rules = rules
	text := p.String()
	if !strings.Contains(text, `meta skuid @enforce_users counter log prefix "NFT-EGRESS-DROP " group 77 drop`) {
		t.Fatalf("the old plan renders differently:\n%s", text)
	}
	byText := lab.NewNetns(t)
	loadText(t, p, byText)
	if _, err := Apply(p, l.target); err != nil {
		t.Fatal(err)
	}
	if a, b := listTable(t, byText, DefaultTable), listTable(t, &lab.Netns{Name: l.target.Netns}, DefaultTable); a != b {
		t.Errorf("listings differ\n--- nft -f:\n%s\n--- netlink:\n%s", a, b)
	}
	if sent, failed := burst(t, l.nobody, 30000, 20); sent != 0 || failed != 20 {
		t.Errorf("the enforced user sent %d of 20 unlearned datagrams", sent)
	}
}

// TestPlansToKeepAfterPrune: with keep_generations 2, the plans the
// current generation (a rollback to generation 1) and a default rollback
// need survive a prune, a rollback works, and a rollback to a pruned plan
// says why it cannot.
func TestPlansToKeepAfterPrune(t *testing.T) {
	l := newEnforceLab(t)
	st, err := store.Create(t.TempDir()+"/baseline.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mode := ModeAudit
		if i%2 == 1 {
			mode = ModeEnforce
		}
		if _, _, err := ApplyGeneration(Build(labBaseline(), labOptions(mode)), l.target, RolloutOptions{Store: st, Command: "test " + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Rollback(st, l.target, DefaultTable, RollbackOptions{To: 1, Command: "test", Reason: "back to 1"}); err != nil { // generation 6 restores 1
		t.Fatal(err)
	}
	res, err := st.Prune(store.PruneOptions{Now: time.Now(), KeepGenerations: 2, KeepPlans: PlansToKeep})
	if err != nil {
		t.Fatal(err)
	}
	if res.Plans != 3 {
		t.Errorf("pruned %d plans, want 3 (2, 3 and 4; 1 is current, 5 the rollback target)", res.Plans)
	}
	if _, err := Rollback(st, l.target, DefaultTable, RollbackOptions{To: 3, Command: "test", Reason: "to a pruned plan"}); err == nil || !strings.Contains(err.Error(), "pruned") {
		t.Errorf("rollback to a pruned plan: %v", err)
	}
	g, err := Rollback(st, l.target, DefaultTable, RollbackOptions{Command: "test", Reason: "the default rollback"})
	if err != nil || g.Restores != 5 {
		t.Fatalf("default rollback: %+v, %v", g, err)
	}
	if s, _ := ReadStatus(l.target, DefaultTable, false); s.Mode != ModeAudit {
		t.Errorf("after the rollback to generation 5 the mode is %s", s.Mode)
	}
	// Generation 7 restores 5; 6 (restoring 1) is the rollback target.
	if _, err := st.Prune(store.PruneOptions{Now: time.Now(), KeepGenerations: 2, KeepPlans: PlansToKeep}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []uint64{1, 5} {
		if _, err := st.GenerationPlan(n); err != nil {
			t.Errorf("plan %d: %v", n, err)
		}
	}
}
