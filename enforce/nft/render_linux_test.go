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
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/nft/nfttest"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestTextAndNetlinkListTheSame loads the nft text into one namespace and
// applies the plan through netlink in another: nft lists the same table.
func TestTextAndNetlinkListTheSame(t *testing.T) {
	lab.Require(t, "nft")
	for _, c := range plantest.GoldenCases {
		t.Run(c.Name, func(t *testing.T) {
			p := c.Plan()
			byText, byNetlink := lab.NewNetns(t), lab.NewNetns(t)
			nfttest.LoadText(t, p, byText)
			res, err := nft.Open(nft.Target{Netns: byNetlink.Name}).Apply(p)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Verified || res.Elements != len(p.Sets[0].Elements)+len(p.Sets[1].Elements) {
				t.Errorf("apply result %+v", res)
			}
			a, b := lab.ListTable(t, byText, "egress"), lab.ListTable(t, byNetlink, "egress")
			if a != b {
				t.Errorf("listings differ\n--- nft -f:\n%s\n--- netlink:\n%s", a, b)
			}
		})
	}
}

// TestGoldenFilesLoad: nft -c accepts every golden file.
func TestGoldenFilesLoad(t *testing.T) {
	lab.Require(t, "nft")
	ns := lab.NewNetns(t)
	files, err := filepath.Glob("../plan/testdata/*.nft")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "-c", "-f", abs)
	}
}

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
