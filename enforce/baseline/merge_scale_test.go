package baseline

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/scaletest"
	"github.com/egresskit/egress/store"
)

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
	scaletest.Linear(t, "the fleet of an export repeating a flow", n, func(n int) func() {
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
