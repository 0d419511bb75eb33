//go:build linux

package namecheck_test

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/internal/nclab"
	"github.com/egresskit/egress/namecheck"
)

// TestNameCheckSaysFollowedMapReplaced: when the follower's pinned map
// of followed destinations is no longer the one a running name check
// reads (the pin removed and a follower made a new one, or a follower
// that replaced it), the addresses the follower opens are not
// name-checked: the name check says so loudly, while it keeps checking
// the rest.
func TestNameCheckSaysFollowedMapReplaced(t *testing.T) {
	h := nclab.NewHost(t)
	var logs lab.Buffer
	cfg := h.NameCheck()
	cfg.Reload, cfg.Log = 100*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil))
	col := namecheck.NewCollector()
	cfg.OnChecker = col.Attach
	nclab.Start(t, cfg)
	if v := replacedMetric(t, col); v != 0 {
		t.Fatalf("egress_namecheck_followed_map_replaced is %v before the map was replaced", v)
	}
	followed := h.FollowedPin(t)
	if err := os.Remove(followed); err != nil {
		t.Fatal(err)
	}
	f, err := follow.Start(h.Follower())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := os.Stat(followed); err != nil {
		t.Fatalf("the follower pinned no followed map: %v", err)
	}
	lab.Await(t, "the name check to say its followed map was replaced", func() bool {
		return strings.Contains(logs.String(), "are NOT name-checked")
	})
	if s := logs.String(); !strings.Contains(s, "level=ERROR") || !strings.Contains(s, followed) {
		t.Errorf("log:\n%s", s)
	}
	if v := replacedMetric(t, col); v != 1 {
		t.Errorf("egress_namecheck_followed_map_replaced is %v", v)
	}
}

// replacedMetric is egress_namecheck_followed_map_replaced (-1: missing).
func replacedMetric(t *testing.T, col *namecheck.Collector) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "egress_namecheck_followed_map_replaced" && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
