//go:build linux

package follow

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// The follower's kernel side: loading its programs with maps sized from
// the plan, the pinned mark check, the gate element that makes the table
// accept the follow mark only while a follower runs, the enforced
// namespace, and the users' shares of the query table.

// DefaultPinRoot is where the follower pins its mark check and the
// sockets' authorizations: a directory on the bpf file system.
const DefaultPinRoot = "/sys/fs/bpf/egress"

// pinCheck and pinSockauth name the pins in the follower's directory.
const (
	pinCheck    = "mark_check"
	pinSockauth = "sockauth"
	// PinFollowed is the name check's view of the followed TCP
	// destinations (bpf/follow.c's followed map), pinned in the
	// follower's directory: the name check loads it from there.
	PinFollowed = bpf.FollowMapFollowed
	// NameCheckDir is the name check's directory in the follower's, and
	// NameCheckLink its pinned link there: while that is pinned, a name
	// check's program uses the pinned followed map.
	NameCheckDir  = "namecheck"
	NameCheckLink = "namecheck_link"
)

// specHook, when set (by a test), changes the spec before it loads: the
// maps of another version.
var specHook func(*ebpf.CollectionSpec)

// initUserNS is the inode of the initial user namespace (PROC_USER_INIT_INO).
const initUserNS = 0xEFFFFFFD

// followSizes are the map sizes a follower was loaded with: a generation
// that needs more makes it stop, to be restarted with larger ones.
type followSizes struct {
	rules, uids int
}

func sizesFor(spec *plan.FollowSpec) followSizes {
	var rules, uids int
	if spec != nil {
		seen := map[uint32]bool{}
		keys := map[[2]uint64]bool{}
		for _, r := range spec.Rules {
			seen[r.UID] = true
			keys[[2]uint64{uint64(r.UID), nameHash(r.Name)}] = true
		}
		rules, uids = len(keys), len(seen)
	}
	// Room for later generations to grow before a restart is needed.
	return followSizes{rules: max(2*rules, 16384), uids: max(2*uids, 1024)}
}

// enforcedNetns returns the cookie of the target's network namespace
// (what bpf_get_netns_cookie gives for its sockets). It refuses a
// namespace owned by another user namespace than the initial one: its
// sockets' uids would not be the host's.
func enforcedNetns(t nft.Target) (uint64, error) {
	fd, done, err := t.OpenNetns()
	if err != nil {
		return 0, err
	}
	defer done()
	if fd >= 0 {
		userns, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
		if err != nil {
			return 0, fmt.Errorf("find the user namespace of %s: %w", t, err)
		}
		var st unix.Stat_t
		err = unix.Fstat(userns, &st)
		unix.Close(userns)
		if err != nil {
			return 0, fmt.Errorf("find the user namespace of %s: %w", t, err)
		}
		if st.Ino != initUserNS {
			return 0, fmt.Errorf("%s belongs to a user namespace of its own: the uids of its sockets are not the host's, and the follower cannot trust them", t)
		}
	}
	var cookie uint64
	err = inNetns(fd, func() error {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(s)
		v, err := unix.GetsockoptUint64(s, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		cookie = v
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read the cookie of %s: %w", t, err)
	}
	return cookie, nil
}

// inNetns runs fn on a thread that entered the namespace fd (the
// caller's own for -1); the thread is thrown away after.
func inNetns(fd int, fn func() error) error {
	if fd < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// pinDir is the follower's own directory under the pin root: one per
// enforced namespace and table.
func pinDir(root, table string, netns uint64) (string, error) {
	probe := root
	for {
		var st unix.Statfs_t
		err := unix.Statfs(probe, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return "", fmt.Errorf("pin directory %s is not on a bpf file system: mount one (mount -t bpf bpf /sys/fs/bpf) or give --pin-dir", root)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) || probe == filepath.Dir(probe) {
			return "", fmt.Errorf("check pin directory %s: %w", root, err)
		}
		probe = filepath.Dir(probe)
	}
	dir := pinPath(root, table, netns)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create pin directory: %w", err)
	}
	return dir, nil
}

// load loads the programs with maps sized for spec. The socket
// authorizations are pinned and shared with earlier followers of the same
// namespace and table.
func (f *Follower) load(spec *plan.FollowSpec, netns uint64) error {
	s, err := bpf.LoadFollow()
	if err != nil {
		return fmt.Errorf("load follower spec: %w", err)
	}
	mark, floor, ttlMax := uint32(plan.DefaultFollowMark), plan.DefaultTTLFloor, plan.DefaultTTLMax
	if spec != nil {
		mark, floor, ttlMax = spec.Mark, spec.TTLFloor, spec.MaxTTL()
	}
	for name, v := range map[string]any{"follow_mark": mark, "window_ns": uint64(f.cfg.Window), "floor_ns": uint64(floor),
		"ttl_max_ns": uint64(ttlMax), "netns_cookie": netns} {
		if err := s.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	f.sizes = sizesFor(spec)
	s.Maps["rules"].MaxEntries = uint32(f.sizes.rules)
	s.Maps["queries"].MaxEntries = uint32(f.sizes.uids)
	f.shareSpec = s.Maps["queries"].InnerMap.Copy()
	f.shareSpec.MaxEntries = uint32(f.cfg.QueryShare)
	s.Maps["sockauth"].Pinning = ebpf.PinByName
	s.Maps[PinFollowed].Pinning = ebpf.PinByName
	s.Maps[PinPolicySlot].Pinning = ebpf.PinByName // a follower that dies must not empty it
	if specHook != nil {
		specHook(s)
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: f.pinDir}}
	err = cgroupbpf.Load(s, &f.objs, opts, "follower programs")
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Another version's maps: start afresh.
		if err := f.removeIncompatible(s); err != nil {
			return err
		}
		err = cgroupbpf.Load(s, &f.objs, opts, "follower programs")
	}
	return err
}

// removeIncompatible removes the pinned maps of another version that do
// not fit s. Sockets marked with the old authorizations lose them (their
// marked datagrams are dropped). It refuses to replace the map of followed
// destinations while a name check is pinned beside it: that check's
// program keeps the old map, and would not see the addresses this
// follower opens (a silent gap in the check).
func (f *Follower) removeIncompatible(s *ebpf.CollectionSpec) error {
	var stale []string
	// Not the DNS policy's slot: a dead follower's program may run the
	// policy from it, and unpinning it would empty it (the load then
	// fails, loudly, instead).
	for _, name := range []string{pinSockauth, PinFollowed} {
		path := filepath.Join(f.pinDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open the pinned map %s: %w", path, err)
		}
		err = s.Maps[name].Compatible(m)
		m.Close()
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			stale = append(stale, name)
		}
	}
	check := filepath.Join(f.pinDir, NameCheckDir, NameCheckLink)
	if slices.Contains(stale, PinFollowed) {
		if _, err := os.Stat(check); err == nil {
			return fmt.Errorf("the pinned followed destinations %s do not fit this version, and the name check pinned at %s uses them: "+
				"replacing them would hide the addresses this follower opens from that check; stop the name check (a clean stop unpins it; "+
				"if none runs, one that died left it: remove %s), start the follower, then the name check again",
				filepath.Join(f.pinDir, PinFollowed), check, check)
		}
	}
	for _, name := range stale {
		f.cfg.Log.Warn("a pinned map does not fit this version: replacing it", "pin", filepath.Join(f.pinDir, name))
		if err := os.Remove(filepath.Join(f.pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the pinned map: %w", err)
		}
	}
	return nil
}

// attach links the programs to the cgroup. The mark check (the egress
// program) is pinned, so that it outlives a follower that dies: the one
// an earlier follower left is replaced once ours is in place.
func (f *Follower) attach() error {
	links, err := cgroupbpf.Attach(f.cfg.Cgroup, []cgroupbpf.Attachment{
		{Name: "mark check and queries (egress)", Type: ebpf.AttachCGroupInetEgress, Program: f.objs.FollowEgress},
		{Name: "answers (ingress)", Type: ebpf.AttachCGroupInetIngress, Program: f.objs.FollowAnswer},
		{Name: "connect4", Type: ebpf.AttachCGroupInet4Connect, Program: f.objs.FollowConnect4},
		{Name: "connect6", Type: ebpf.AttachCGroupInet6Connect, Program: f.objs.FollowConnect6},
	})
	if err != nil {
		return err
	}
	f.check, f.links = links[0], links[1:]
	// Pin ours beside the old one first: if that fails, the old check
	// stays.
	path := filepath.Join(f.pinDir, pinCheck)
	replaced, err := cgroupbpf.ReplacePin(f.check, path, "mark check")
	if replaced {
		f.cfg.Log.Warn("replaced the mark check a follower that did not stop cleanly left", "pin", path)
	}
	return err
}

// refreshGate (re)adds the follower's cgroup to the gate set with its
// timeout: while it is there, the table accepts the follow mark for
// sockets of that cgroup. It says so once when it cannot.
func (f *Follower) refreshGate() {
	err := f.nl.OpenGate(f.cfg.Table, f.cgroupID, f.cfg.GateTimeout)
	switch {
	case err != nil && !f.gateFailing:
		f.cfg.Log.Warn("open the follow gate: the table does not accept the follow mark, so a first connection may be dropped until its address is in the set",
			"set", plan.SetFollowGate, "err", err)
	case err == nil && f.gateFailing:
		f.cfg.Log.Info("the follow gate is open again", "set", plan.SetFollowGate)
	}
	f.gateFailing = err != nil
}

// closeGate removes the follower's cgroup from the gate set: the table
// stops accepting the follow mark at once.
func (f *Follower) closeGate() error {
	err := f.nl.CloseGate(f.cfg.Table, f.cgroupID)
	if err != nil && !nft.IsNotFound(err) {
		return fmt.Errorf("close the follow gate: %w", err)
	}
	return nil
}

// setShares gives each user with name rules its own share of the query
// table, and takes it from users that have none any more.
func (f *Follower) setShares(uids map[uint32]bool) error {
	if len(uids) > f.sizes.uids {
		return fmt.Errorf("%d users have name rules, more than the %d the follower's maps were sized for: restart the follower", len(uids), f.sizes.uids)
	}
	for uid, m := range f.shares {
		if !uids[uid] {
			_ = f.objs.Queries.Delete(uid)
			m.Close()
			delete(f.shares, uid)
		}
	}
	for uid := range uids {
		if f.shares[uid] != nil {
			continue
		}
		m, err := ebpf.NewMap(f.shareSpec)
		if err != nil {
			return fmt.Errorf("create the query share of uid %d: %w", uid, err)
		}
		if err := f.objs.Queries.Put(uid, m); err != nil {
			m.Close()
			return fmt.Errorf("install the query share of uid %d: %w", uid, err)
		}
		f.shares[uid] = m
	}
	return nil
}

// reapQueries removes the queries nobody answered within QueryLife, so
// they stop counting against their user's share.
func (f *Follower) reapQueries() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	limit := uint64(ts.Nano() - int64(f.cfg.QueryLife))
	var k bpf.FollowQueryKey
	var v bpf.FollowQueryVal
	n := 0
	for _, m := range f.shares {
		var old []bpf.FollowQueryKey
		it := m.Iterate()
		for it.Next(&k, &v) {
			if v.Ts < limit {
				old = append(old, k)
			}
		}
		for _, k := range old {
			if m.Delete(k) == nil {
				n++
			}
		}
	}
	if n > 0 {
		f.mu.Lock()
		f.stats.QueriesExpired += uint64(n)
		f.mu.Unlock()
	}
}

// followedGrace is how long past its time an entry of the name check's
// view stays: the sets take an element a little after the kernel noted
// it, and an entry left longer only makes the check stricter.
const followedGrace = time.Minute

// reapFollowed removes from the name check's view the destinations the
// follow sets no longer hold (their time passed); it returns how many.
func (f *Follower) reapFollowed() int {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	limit := uint64(ts.Nano() - int64(followedGrace))
	var k bpf.FollowAuthKey
	var until uint64
	var old []bpf.FollowAuthKey
	for it := f.objs.Followed.Iterate(); it.Next(&k, &until); {
		if until < limit {
			old = append(old, k)
		}
	}
	n := 0
	for _, k := range old {
		if f.objs.Followed.Delete(k) == nil {
			n++
		}
	}
	return n
}

// closeKernel detaches and frees everything. graceful also gives a DNS
// policy in the slot its own program back, closes the gate, and unpins
// the mark check and (once the check is detached) the slot; without it
// (a crash, in tests) the check stays attached, the slot filled, and the
// gate element times out.
func (f *Follower) closeKernel(graceful bool) error {
	var errs []error
	unpinned := false
	if graceful && f.check != nil {
		var err error
		unpinned, err = f.unpinCheck()
		errs = append(errs, err)
		if unlock := f.pinsLock; unlock != nil {
			defer func() { unlock(); f.pinsLock = nil }()
		}
	}
	if f.check != nil {
		errs = append(errs, f.check.Close())
		f.check = nil
	}
	if unpinned && f.objs.DnsPolicySlot != nil {
		// Detached: the slot has no program left to run it.
		errs = append(errs, ClearSlot(f.objs.DnsPolicySlot), f.objs.DnsPolicySlot.Unpin())
	}
	for _, l := range f.links {
		errs = append(errs, l.Close())
	}
	f.links = nil
	if f.rd != nil {
		errs = append(errs, f.rd.Close())
	}
	for uid, m := range f.shares {
		m.Close()
		delete(f.shares, uid)
	}
	errs = append(errs, f.objs.Close())
	return errors.Join(errs...)
}

// unpinCheck, at a clean stop, gives a DNS policy in the follower's slot
// its own program again, closes the gate, and unpins the mark check; it
// says whether the check was unpinned (it stays pinned, and attached, when
// a step before failed). It takes the pin directory's lock, which
// closeKernel releases once the check is detached (f.pinsLock).
func (f *Follower) unpinCheck() (bool, error) {
	unlock, err := LockPins(f.pinDir)
	if err != nil {
		return false, fmt.Errorf("%w; the mark check stays pinned at %s", err, filepath.Join(f.pinDir, pinCheck))
	}
	f.pinsLock = unlock
	if _, err := f.givePolicyBack(); err != nil {
		return false, err
	}
	// The gate first: once the table no longer accepts the mark, the
	// check has nothing left to guard.
	if err := f.closeGate(); err != nil {
		return false, fmt.Errorf("%w; the mark check stays pinned at %s", err, filepath.Join(f.pinDir, pinCheck))
	}
	if err := f.check.Unpin(); err != nil {
		return false, err
	}
	return true, nil
}

// gateTimeout is the gate element's lifetime: after a crash, the table
// accepts the follow mark this long (the pinned check still drops what
// no authorization covers).
func (c *Config) gateDefaults() {
	if c.GateRefresh <= 0 {
		c.GateRefresh = time.Second
	}
	if c.GateTimeout <= 0 {
		c.GateTimeout = plan.FollowGateTimeout
	}
	c.GateTimeout = max(c.GateTimeout, 2*c.GateRefresh)
}
