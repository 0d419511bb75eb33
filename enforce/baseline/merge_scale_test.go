package baseline

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// linearIn says whether the work of size n costs about ten times the work
// of size n/10, on the same machine (the best of three each): prepare
// makes the inputs of a size, untimed, and returns the work. A linear
// search per item makes the ratio a hundred; the limit is 30, and the
// large work may take three seconds before it fails (the VM's noise and
// its load make small figures swing).
func linearIn(t *testing.T, what string, n int, prepare func(n int) func()) {
	t.Helper()
	var small time.Duration
	best := func(n int, limit time.Duration) time.Duration {
		var d time.Duration
		for range 3 {
			work := prepare(n)
			done := make(chan struct{})
			start := time.Now()
			go func() { work(); close(done) }()
			select {
			case <-done:
			case <-time.After(limit):
				t.Fatalf("%s of %d took more than %v (of %d: %v)", what, n, limit, n/10, small)
			}
			if e := time.Since(start); d == 0 || e < d {
				d = e
			}
		}
		return d
	}
	small = best(n/10, time.Hour)
	large := best(n, max(30*small, 3*time.Second))
	t.Logf("%s: %d %v, %d %v: %.1fx", what, n/10, small, n, large, float64(large)/float64(small))
}

// TestFleetRepeatedFlowLinear: an export that repeats a flow is merged
// (its hits added, its lists united), and each repeat brings up to 32
// names of its own: the union searched the names gathered so far per
// name, so 20k repeats took 1.2 s, 40k five. The fleet of an export
// repeating a flow n times costs about ten times that of n/10, and the
// merged flow holds every name once, in the order read.
func TestFleetRepeatedFlowLinear(t *testing.T) {
	dir := t.TempDir()
	write := func(n int) string {
		e := store.Export{Format: store.ExportFormat, Host: "h1", Exported: tp}
		for i := range n {
			f := pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 1, tp, fmt.Sprintf("h%d.example", i), "common.example")
			f.Processes = []string{fmt.Sprintf("/usr/bin/p%d", i)}
			e.Flows = append(e.Flows, f)
		}
		data, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("repeats-%d.json", n))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	const n = 60_000
	paths := map[int]string{n / 10: write(n / 10), n: write(n)}
	linearIn(t, "the fleet of an export repeating a flow", n, func(n int) func() {
		return func() {
			m, _, err := ReadFleet([]string{paths[n]}, func(string) {})
			if err != nil {
				t.Error(err)
				return
			}
			if f := m.Flows[0]; len(m.Flows) != 1 || f.Hits != uint64(n) || len(f.Hostnames) != n+1 || len(f.Processes) != n ||
				f.Hostnames[1] != "common.example" || f.Hostnames[n] != fmt.Sprintf("h%d.example", n-1) || !slices.Equal(m.Hosts[f.FlowKey], []string{"h1"}) {
				t.Errorf("%d flows merged, the first with %d hits, %d hostnames, %d processes, hosts %q", len(m.Flows), f.Hits, len(f.Hostnames), len(f.Processes), m.Hosts[f.FlowKey])
			}
		}
	})
}

// TestFleetHostsOnce: a flow's hosts are each listed once, in the order
// of the exports, when an export repeats the flow and when two exports
// name the same host.
func TestFleetHostsOnce(t *testing.T) {
	f := pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 1, tp)
	g := pflow(1000, plan.ProtoTCP, "192.0.2.2", 443, 1, tp)
	exp := func(host string, flows ...store.Flow) *store.Export {
		return &store.Export{Format: store.ExportFormat, Host: host, Exported: tp, Flows: flows}
	}
	m := Merge([]*store.Export{exp("a", f, f), exp("b", g, f, f), exp("a", g, f), exp("c", g)})
	if got := fmt.Sprint(m.Hosts[f.FlowKey], m.Hosts[g.FlowKey]); got != "[a b] [b a c]" {
		t.Fatalf("hosts %s, want [a b] [b a c]", got)
	}
}
