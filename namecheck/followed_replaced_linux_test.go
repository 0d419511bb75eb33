//go:build linux

package namecheck_test

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/internal/nclab"
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
	nclab.Start(t, cfg)
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
}
