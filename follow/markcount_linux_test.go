//go:build linux

package follow

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// markRulesAccepted sums the packet counters of the table's follow-mark
// rules as nft lists them: an independent reading of what the follower
// reports as "accepted by the mark rules" (issue 11, item 6).
func (l *followLab) markRulesAccepted(t *testing.T) uint64 {
	t.Helper()
	out := lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "-j", "list", "chain", "inet", "egress", "output")
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Comment string           `json:"comment"`
				Expr    []map[string]any `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	var packets uint64
	rules := 0
	for _, o := range doc.Nftables {
		if o.Rule == nil || !strings.HasPrefix(o.Rule.Comment, "dns-followed: just resolved,") {
			continue
		}
		rules++
		for _, e := range o.Rule.Expr {
			if c, ok := e["counter"].(map[string]any); ok {
				p, _ := c["packets"].(float64)
				packets += uint64(p)
			}
		}
	}
	if rules == 0 {
		t.Fatalf("no follow-mark rule in the table:\n%s", out)
	}
	return packets
}
