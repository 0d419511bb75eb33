//go:build linux

package follow

import (
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
)

// markRulesAccepted sums the packet counters of the table's follow-mark
// rules as nft lists them: an independent reading of what the follower
// reports as "accepted by the mark rules" (issue 11, item 6).
func (l *followLab) markRulesAccepted(t *testing.T) uint64 {
	t.Helper()
	var packets uint64
	rules := 0
	for comment, counters := range lab.RuleCounters(t, l.pair.Client, "egress") {
		if !strings.HasPrefix(comment, "dns-followed: just resolved,") {
			continue
		}
		rules++
		for _, p := range counters {
			packets += p
		}
	}
	if rules == 0 {
		t.Fatal("no follow-mark rule in the table")
	}
	return packets
}
