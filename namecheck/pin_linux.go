//go:build linux

package namecheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// The maps a pinned check shares with the next checker, and its link.
// The counters too: they go on counting while no checker runs.
var pinnedMaps = []string{bpf.NamecheckMapNcDests, bpf.NamecheckMapNcNames, bpf.NamecheckMapNcSocks, bpf.NamecheckMapNcBufs,
	bpf.NamecheckMapNcStats}

// pinLink names the pinned link: the follower looks for it before it
// replaces the followed map the check uses.
const pinLink = follow.NameCheckLink

// load loads the objects; with a pin directory, the destinations, names
// and socket states are those pinned there (an earlier checker's), and
// the checker starts from what they hold.
func (c *Checker) load(spec *ebpf.CollectionSpec) error {
	var repl map[string]*ebpf.Map
	if c.cfg.FollowPinDir != "" && !c.cfg.Learn {
		m, err := openFollowed(spec, c.cfg.FollowPinDir)
		if err != nil {
			return err
		}
		c.followed = m
		repl = map[string]*ebpf.Map{bpf.NamecheckMapFollowed: m}
	}
	if c.cfg.PinDir == "" {
		return cgroupbpf.Load(spec, &c.objs, &ebpf.CollectionOptions{MapReplacements: repl}, "name check")
	}
	for _, m := range pinnedMaps {
		spec.Maps[m].Pinning = ebpf.PinByName
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: c.cfg.PinDir}, MapReplacements: repl}
	err := cgroupbpf.Load(spec, &c.objs, opts, "name check")
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Another version's maps: start afresh. Sockets it refused keep
		// being dropped by its program until ours replaces it.
		c.cfg.Log.Warn("the pinned name check maps do not fit this version: replacing them", "dir", c.cfg.PinDir)
		for _, m := range pinnedMaps {
			if err := os.Remove(filepath.Join(c.cfg.PinDir, m)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove the pinned map %s: %w", m, err)
			}
		}
		err = cgroupbpf.Load(spec, &c.objs, opts, "name check")
	}
	if err != nil {
		return err
	}
	var d bpf.NamecheckNcDest
	var mode uint8
	for it := c.objs.NcDests.Iterate(); it.Next(&d, &mode); {
		c.dests[d] = mode
	}
	var k bpf.NamecheckNcNameKey
	var one uint8
	for it := c.objs.NcNames.Iterate(); it.Next(&k, &one); {
		c.names[k] = true
	}
	if len(c.dests) > 0 {
		c.cfg.Log.Info("name check: took over the pinned destinations", "destinations", len(c.dests), "dir", c.cfg.PinDir)
	}
	return nil
}

// openFollowed opens the follower's view of the destinations it opens,
// pinned in its directory, or creates and pins it there for the follower
// to take (it may start later, or again).
func openFollowed(spec *ebpf.CollectionSpec, dir string) (*ebpf.Map, error) {
	ms := spec.Maps[bpf.NamecheckMapFollowed].Copy()
	ms.Pinning = ebpf.PinByName
	m, err := ebpf.NewMapWithOptions(ms, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		return nil, fmt.Errorf("open the follower's destinations (%s): %w", filepath.Join(dir, ms.Name), err)
	}
	return m, nil
}

// followedReplaced reports whether the follower's pinned map of followed
// destinations is no longer the map this check reads (the pin was
// removed, or replaced): the addresses the follower opens from then on
// are not name-checked. It says where that pin is.
func (c *Checker) followedReplaced() (replaced bool, pin string, err error) {
	if c.followed == nil {
		return false, "", nil
	}
	pin = filepath.Join(c.cfg.FollowPinDir, follow.PinFollowed)
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return true, pin, nil
	}
	if err != nil {
		return false, pin, fmt.Errorf("open the follower's destinations %s: %w", pin, err)
	}
	defer m.Close()
	pinned, err := mapID(m)
	if err != nil {
		return false, pin, err
	}
	ours, err := mapID(c.followed)
	return err == nil && pinned != ours, pin, err
}

func mapID(m *ebpf.Map) (ebpf.MapID, error) {
	info, err := m.Info()
	if err != nil {
		return 0, fmt.Errorf("read a map's id: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("read a map's id: not available")
	}
	return id, nil
}

// pinLink pins the link, replacing the one a checker that did not stop
// cleanly left (ours is attached first: no moment without a check).
func (c *Checker) pinLink() error {
	path := filepath.Join(c.cfg.PinDir, pinLink)
	replaced, err := cgroupbpf.ReplacePin(c.link, path, "name check")
	if replaced {
		c.cfg.Log.Warn("replaced the name check a checker that did not stop cleanly left", "pin", path)
	}
	return err
}

// Detach removes the check: the pinned link goes, then the checker is
// closed. A clean stop; a checker that dies (Close alone, or no call)
// leaves a pinned check attached.
func (c *Checker) Detach() error {
	var errs []error
	if c.cfg.PinDir != "" && c.link != nil {
		errs = append(errs, c.link.Unpin())
	}
	return errors.Join(append(errs, c.Close())...)
}

// PinnedStats reads the counters of the check pinned in dir (that a
// checker that died left, for one).
func PinnedStats(dir string) (Stats, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.NamecheckMapNcStats), nil)
	if err != nil {
		return Stats{}, fmt.Errorf("open the pinned name check counters: %w", err)
	}
	defer m.Close()
	return readStats(m)
}

// PinDirOf is where Run pins the check of a table and namespace under
// root (a directory of the follower's pin directory).
func PinDirOf(root, table string, netns uint64) string {
	return filepath.Join(follow.PinPath(root, table, netns), follow.NameCheckDir)
}

// Pinned says whether a check is pinned (so attached) in dir.
func Pinned(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, pinLink))
	return err == nil
}
