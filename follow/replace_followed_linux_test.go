//go:build linux

package follow_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/nclab"
)

// pinnedMapID is the ID of the map pinned at path.
func pinnedMapID(t *testing.T, path string) ebpf.MapID {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// TestFollowerKeepsTheNameChecksFollowedMap: a follower of another
// version, whose map of followed destinations does not fit the pinned
// one, refuses to replace it while a name check is attached with it
// (the check keeps the old map: the addresses this follower opened
// would not be name-checked), and says what to do. Once the name check
// stopped cleanly, the follower replaces the map.
func TestFollowerKeepsTheNameChecksFollowedMap(t *testing.T) {
	h := nclab.NewHost(t)
	stop := nclab.Start(t, h.NameCheck())
	followed := h.FollowedPin(t)
	checks := pinnedMapID(t, followed)

	defer follow.SetSpecHook(func(s *ebpf.CollectionSpec) { s.Maps[follow.PinFollowed].MaxEntries++ })()
	cfg := h.Follower()
	f, err := follow.Start(cfg)
	if err == nil {
		f.Close()
		t.Fatalf("the follower replaced the followed map a running name check uses (pinned map %d, the check's %d): the check does not see the addresses it opens",
			pinnedMapID(t, followed), checks)
	}
	for _, want := range []string{"name check", followed, "stop the name check"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	if id := pinnedMapID(t, followed); id != checks {
		t.Fatalf("the pinned followed map is %d, the name check's %d", id, checks)
	}

	// The name check stops cleanly (unpinned): nothing uses the old map.
	stop()
	f, err = follow.Start(cfg)
	if err != nil {
		t.Fatalf("with no name check attached: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if id := pinnedMapID(t, followed); id == checks {
		t.Fatal("the incompatible followed map was not replaced")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(followed), "namecheck", "namecheck_link")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the name check's link is still pinned: %v", err)
	}
}
