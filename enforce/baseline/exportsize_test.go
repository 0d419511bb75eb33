package baseline

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// lowerExportBounds sets the export and fleet bounds for one test.
func lowerExportBounds(t *testing.T, export, fleet int64) {
	saved, savedFleet := maxExportBytes, maxFleetBytes
	maxExportBytes, maxFleetBytes = export, fleet
	t.Cleanup(func() { maxExportBytes, maxFleetBytes = saved, savedFleet })
}

func writeExport(t *testing.T, dir, name string, e *store.Export) string {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExportSizeBounded: an export is read whole, and reading one takes
// about ten times its size. One over the bound (a 2 GiB file, sparse
// here) is refused before it is read, by ReadExport, by ReadFleet and by
// the size check of the memo's reader; a fleet whose exports are together
// over the fleet's bound too. One within the bound reads.
func TestExportSizeBounded(t *testing.T) {
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.json")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(2 << 30); err != nil {
		f.Close()
		t.Fatal(err)
	}
	f.Close()
	for name, read := range map[string]func() error{
		"ReadExport":      func() error { _, _, err := ReadExport(huge); return err },
		"ReadFleet":       func() error { _, _, err := ReadFleet([]string{huge}, func(string) {}); return err },
		"CheckExportSize": func() error { return CheckExportSize(huge) },
	} {
		if err := read(); err == nil || !strings.Contains(err.Error(), "over the bound of an export") {
			t.Fatalf("%s of a 2 GiB export: %v, want it refused over the bound", name, err)
		}
	}

	e := store.Export{Format: store.ExportFormat, Host: "h1", Exported: tp, Users: map[uint32]string{1000: "app"},
		Flows: []store.Flow{pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 5, tp, "a.example")}}
	small := writeExport(t, dir, "small.json", &e)
	st, err := os.Stat(small)
	if err != nil {
		t.Fatal(err)
	}
	// Lowered bounds: the export fits, two of them do not fit the fleet.
	lowerExportBounds(t, st.Size(), st.Size()*3/2)
	if _, _, err := ReadExport(small); err != nil {
		t.Fatalf("an export at the bound: %v", err)
	}
	if err := CheckExportSize(small); err != nil {
		t.Fatalf("an export at the bound: %v", err)
	}
	e.Host = "h2"
	other := writeExport(t, dir, "other.json", &e)
	if _, _, err := ReadFleet([]string{small, other}, func(string) {}); err == nil || !strings.Contains(err.Error(), "over the bound of a fleet") {
		t.Fatalf("a fleet over its bound: %v, want it refused", err)
	}
	maxExportBytes = st.Size() - 1
	if _, _, err := ReadExport(small); err == nil || !strings.Contains(err.Error(), "over the bound of an export") {
		t.Fatalf("an export a byte over the bound: %v, want it refused", err)
	}
}

// TestExportLongStringsLeftOut: a learner writes no process, comm,
// cgroup or presented name longer than a path; an export's longer ones
// (forged: one string of the file's size would be copied into every list
// and plan it meets) are left out, counted as dropped, with a warning.
func TestExportLongStringsLeftOut(t *testing.T) {
	long := strings.Repeat("x", MaxExportString+1)
	f := pflow(1000, plan.ProtoTCP, "192.0.2.1", 443, 5, tp, "a.example")
	f.Processes = []string{"/usr/bin/" + long, "/usr/bin/curl"}
	f.Comms = []store.ProcessComm{{Exe: "/usr/bin/curl", Comm: long}, {Exe: "/usr/bin/curl", Comm: "c"}}
	f.Cgroups = []string{"/" + long, "/system.slice/a.service", strings.Repeat("y", MaxExportString)}
	f.Presented = []string{long}
	e := store.Export{Format: store.ExportFormat, Host: "h1", Exported: tp, Users: map[uint32]string{1000: "app"}, Flows: []store.Flow{f}}
	read, warnings, err := ReadExport(writeExport(t, t.TempDir(), "e.json", &e))
	if err != nil {
		t.Fatal(err)
	}
	g := read.Flows[0]
	if strings.Join(g.Processes, " ") != "/usr/bin/curl" || len(g.Comms) != 1 || g.Comms[0].Comm != "c" ||
		len(g.Cgroups) != 2 || g.Cgroups[0] != "/system.slice/a.service" || len(g.Presented) != 0 {
		t.Fatalf("read processes %d, comms %d, cgroups %d, presented %d; want the short ones only",
			len(g.Processes), len(g.Comms), len(g.Cgroups), len(g.Presented))
	}
	if g.Dropped != 4 {
		t.Fatalf("%d entries counted as dropped, want 4", g.Dropped)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "longer than a learner writes") {
		t.Fatalf("warnings %q", warnings)
	}
}
