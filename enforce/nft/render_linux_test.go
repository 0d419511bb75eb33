//go:build linux

package nft_test

import (
	"path/filepath"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/nft/nfttest"
	"github.com/egresskit/egress/enforce/plan/plantest"
	"github.com/egresskit/egress/internal/lab"
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
