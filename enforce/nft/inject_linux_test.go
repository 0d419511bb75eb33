//go:build linux

package nft_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/baseline"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestHostileExportCreatesOnlyOurTable: the script generated from a
// hostile export, without the checks on reading it (its rendering alone
// must hold), loads with nft -f in a test namespace and creates nothing
// but our table.
func TestHostileExportCreatesOnlyOurTable(t *testing.T) {
	lab.Require(t, "nft")
	for name, export := range plantest.HostileExports {
		t.Run(name, func(t *testing.T) {
			var e store.Export
			if err := json.Unmarshal([]byte(export), &e); err != nil {
				t.Fatal(err)
			}
			for i := range e.Flows {
				e.Flows[i].FirstSeen, e.Flows[i].LastSeen = plantest.T0, plantest.T0
			}
			m := baseline.Merge([]*store.Export{&e})
			// The header names the exports as "generate --from" does.
			p := plan.Build(m.Flows, plan.Options{Mode: plan.ModeAudit, Hosts: m.Hosts, Now: plantest.T0,
				Source: fmt.Sprintf("%d exports (hosts %s)", 1, e.Host)})
			script := p.String()
			file := filepath.Join(t.TempDir(), "hostile.nft")
			if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			ns := lab.NewNetns(t)
			out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", file).CombinedOutput()
			if err != nil {
				t.Errorf("nft -f of the hostile export's script: %v\n%s", err, out)
			}
			tables := strings.TrimSpace(lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "list", "tables"))
			if tables != "table inet egress" {
				t.Errorf("nft list tables after loading the script:\n%s", tables)
			}
			if t.Failed() {
				t.Logf("the script:\n%s", script)
				return
			}
			// The zoned addresses are left out, not allowed without their zone.
			if l := lab.ListTable(t, ns, "egress"); strings.Contains(l, "fe80::") {
				t.Errorf("a zoned address made it into the table:\n%s", l)
			}
		})
	}
}
