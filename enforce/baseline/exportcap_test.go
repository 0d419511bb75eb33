package baseline

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// TestExportListsBounded: an export is another host's word, and a flow's
// lists in it were as long as the file made them. A learner keeps them
// distinct and bounded (store.Max*), and what reads a flow counts on it:
// the plan's services of a flow were found by a linear search per cgroup
// (20k cgroups of one flow took 2 s to plan), a fleet's union of names
// searched the names gathered so far per name. Read, a flow keeps the
// first distinct entries of each list up to the learner's bound, counts
// the others as dropped, and the read warns.
func TestExportListsBounded(t *testing.T) {
	const n = 20_000
	f := pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 5, tp)
	for i := range n {
		f.Hostnames = append(f.Hostnames, fmt.Sprintf("h%d.example", i))
		f.Processes = append(f.Processes, fmt.Sprintf("/usr/bin/p%d", i))
		f.Comms = append(f.Comms, store.ProcessComm{Comm: fmt.Sprintf("c%d", i), Exe: "/usr/bin/p0"})
		f.Cgroups = append(f.Cgroups, fmt.Sprintf("/system.slice/s%d.service", i%(n/2))) // each twice
		f.Presented = append(f.Presented, fmt.Sprintf("h%d.example", i))
	}
	small := pflow(1000, plan.ProtoTCP, "192.0.2.2", 443, 5, tp, "a.example", "b.example", "a.example")
	small.Cgroups = []string{"/system.slice/a.service"}
	e := store.Export{Format: store.ExportFormat, Host: "h1", Exported: tp, Users: map[uint32]string{1000: "app"}, Flows: []store.Flow{f, small}}
	data, err := json.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "export.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	read, warnings, err := ReadExport(path)
	if err != nil {
		t.Fatal(err)
	}
	g := read.Flows[0]
	if len(g.Hostnames) != store.MaxHostnames || len(g.Processes) != store.MaxProcesses || len(g.Comms) != store.MaxProcesses ||
		len(g.Cgroups) != store.MaxCgroups || len(g.Presented) != store.MaxPresented {
		t.Fatalf("a flow read with %d hostnames, %d processes, %d comms, %d cgroups, %d presented names; want at most %d, %d, %d, %d, %d",
			len(g.Hostnames), len(g.Processes), len(g.Comms), len(g.Cgroups), len(g.Presented),
			store.MaxHostnames, store.MaxProcesses, store.MaxProcesses, store.MaxCgroups, store.MaxPresented)
	}
	if g.Hostnames[0] != "h0.example" || g.Cgroups[store.MaxCgroups-1] != "/system.slice/s15.service" {
		t.Fatalf("kept %q and %q, want the first ones", g.Hostnames[0], g.Cgroups[store.MaxCgroups-1])
	}
	// Every entry past the bound, but a repeat of a kept cgroup.
	want := uint64(len(f.Hostnames) - store.MaxHostnames + len(f.Processes) - store.MaxProcesses + len(f.Comms) - store.MaxProcesses +
		len(f.Cgroups) - 2*store.MaxCgroups + len(f.Presented) - store.MaxPresented)
	if g.Dropped != want {
		t.Fatalf("%d entries counted as dropped, want %d", g.Dropped, want)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "more than a learner keeps") {
		t.Fatalf("warnings %q", warnings)
	}
	// A flow within the bounds loses its repeats only.
	if h := read.Flows[1].Hostnames; strings.Join(h, " ") != "a.example b.example" || read.Flows[1].Dropped != 0 {
		t.Fatalf("the small flow read with hostnames %q, %d dropped", h, read.Flows[1].Dropped)
	}
	// The plan by service holds one element a service, of the kept ones.
	m := merge([]*store.Export{read}, true)
	p := plan.Build(m.Flows, plan.Options{Mode: plan.ModeEnforce, Now: tp, Match: plan.MatchService, AllHosts: m.AllHosts})
	if svcs := p.Services(); len(svcs) != store.MaxCgroups+1 {
		t.Fatalf("the plan holds %d services, want %d", len(svcs), store.MaxCgroups+1)
	}
}
