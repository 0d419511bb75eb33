//go:build linux

package follow

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// The DNS policy inside the follower. The DNS policy (enforce/dnspolicy)
// is a cgroup_skb/egress program of its own; when a follower runs on the
// same cgroup, namespace and table, the policy's program goes in the
// follower's slot (dns_policy_slot, a program array pinned in the
// follower's directory) and follow_egress passes it the packets that may
// be DNS queries by a tail call: one program on the hook instead of two.
//
// The policy moves between its own link and the slot without a moment
// unchecked: the new place is filled before the old one is emptied (both
// run for a moment, and a query passes only if both allow it).
//   - the policy installed while a follower runs: slot first, then its
//     own link dropped (dnspolicy.Install);
//   - a follower starting while a policy is pinned: slot filled before
//     the follower's program is attached, own link dropped after;
//   - a follower stopping cleanly: own link attached and pinned again
//     before the follower's program is detached;
//   - a follower that dies: its program stays attached (pinned) and the
//     slot stays filled (the program array is pinned);
//   - the policy removed: slot emptied and own link dropped.
// Each of these holds the directory's lock (LockPins).

// Pin names of the DNS policy in the table's directory.
const (
	// PinPolicySlot is the follower's program array whose slot 0 holds
	// the DNS policy's program.
	PinPolicySlot = bpf.FollowMapDnsPolicySlot
	// PinPolicyLink is the DNS policy's own link (its own program on the
	// hook), when it is not in a follower's slot.
	PinPolicyLink = "dns_policy"
	// PinPolicyProgram is the DNS policy's program, wherever it runs.
	PinPolicyProgram = "dns_policy_program"
	// PinMarkCheck is the follower's pinned egress link.
	PinMarkCheck = pinCheck
)

// LockPins takes the hand-over lock of a pin directory (an exclusive
// flock on the directory), waiting for it; unlock releases it.
func LockPins(dir string) (unlock func(), err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open pin directory %s: %w", dir, err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return func() { _ = unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }, nil
}

// PolicyProgram opens the DNS policy's program pinned in dir; nil (and no
// error) when none is. A policy pinned by an earlier version has only its
// link: its program is then the link's.
func PolicyProgram(dir string) (*ebpf.Program, error) {
	p, err := ebpf.LoadPinnedProgram(filepath.Join(dir, PinPolicyProgram), nil)
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open the pinned dns policy program: %w", err)
	}
	l, _, err := PolicyLink(dir)
	if l == nil || err != nil {
		return nil, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return nil, fmt.Errorf("read the pinned dns policy: %w", err)
	}
	p, err = ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return nil, fmt.Errorf("open the dns policy's program: %w", err)
	}
	return p, nil
}

// PolicyLink opens the DNS policy's own pinned link in dir and says
// which cgroup it is attached to; nil (and no error) when none is pinned.
func PolicyLink(dir string) (link.Link, uint64, error) {
	return pinnedCgroupLink(filepath.Join(dir, PinPolicyLink), "dns policy")
}

// pinnedCgroupLink opens a pinned cgroup link and says which cgroup it is
// attached to; nil (and no error) when none is pinned at path.
func pinnedCgroupLink(path, what string) (link.Link, uint64, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open the pinned %s %s: %w", what, path, err)
	}
	info, err := l.Info()
	if err != nil {
		l.Close()
		return nil, 0, fmt.Errorf("read the pinned %s %s: %w", what, path, err)
	}
	var cg uint64
	if c := info.Cgroup(); c != nil {
		cg = c.CgroupId
	}
	return l, cg, nil
}

// AttachPolicy attaches the DNS policy's program to cgroup as its own
// program and pins the link in dir, in place of the one pinned before
// (detached once the new one is pinned).
func AttachPolicy(dir, cgroup string, prog *ebpf.Program) error {
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: ebpf.AttachCGroupInetEgress, Program: prog})
	if err != nil {
		return fmt.Errorf("attach dns policy to %s: %w", cgroup, err)
	}
	defer l.Close()
	_, err = cgroupbpf.ReplacePin(l, filepath.Join(dir, PinPolicyLink), "dns policy")
	return err
}

// DropPolicyLink unpins and detaches the DNS policy's own link in dir
// (nothing pinned is no error).
func DropPolicyLink(dir string) error {
	l, _, err := PolicyLink(dir)
	if l == nil || err != nil {
		return err
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin the dns policy: %w", err)
	}
	return nil
}

// HandOverPolicy drops the DNS policy's own link once the policy runs in
// the follower's slot. When the link cannot be dropped it warns that both
// programs check the queries (safe, twice the cost) and says so (false).
func HandOverPolicy(dir string, log *slog.Logger) bool {
	if err := DropPolicyLink(dir); err != nil {
		log.Warn("drop the DNS policy's own program (it runs in the follower's too: both check the queries)", "err", err)
		return false
	}
	return true
}

// SlotRefused warns that the follower's slot refused the DNS policy
// (err): the policy checks the queries from a program of its own instead
// (attached now, or kept).
func SlotRefused(log *slog.Logger, err error) {
	log.Warn("the follower's slot refused the DNS policy: it runs as a program of its own", "err", err)
}

// FollowerSlot opens the slot of the follower whose mark check is pinned
// in dir and attached to the cgroup cgroupID: a running follower, or one
// that died (its check stays). nil (and no error) when there is none.
func FollowerSlot(dir string, cgroupID uint64) (*ebpf.Map, error) {
	l, cg, err := pinnedCgroupLink(filepath.Join(dir, pinCheck), "mark check")
	if l == nil || err != nil {
		return nil, err
	}
	l.Close()
	if cg != cgroupID {
		return nil, nil
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, PinPolicySlot), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // a follower of a version without a slot
	}
	if err != nil {
		return nil, fmt.Errorf("open the follower's dns policy slot: %w", err)
	}
	return m, nil
}

// SlotProgram opens the program in slot 0 of a follower's slot; nil (and
// no error) when it is empty.
func SlotProgram(slot *ebpf.Map) (*ebpf.Program, error) {
	var id uint32
	err := slot.Lookup(uint32(0), &id)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the dns policy slot: %w", err)
	}
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return nil, fmt.Errorf("open the program in the dns policy slot: %w", err)
	}
	return p, nil
}

// FillSlot puts prog in slot 0 (an atomic replace of what was there).
func FillSlot(slot *ebpf.Map, prog *ebpf.Program) error {
	if err := slot.Put(uint32(0), prog); err != nil {
		return fmt.Errorf("put the dns policy in the follower's slot: %w", err)
	}
	return nil
}

// ClearSlot empties slot 0 (empty already is no error).
func ClearSlot(slot *ebpf.Map) error {
	if err := slot.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("empty the dns policy slot: %w", err)
	}
	return nil
}

// takePolicy puts a pinned DNS policy in the follower's slot, before the
// follower's program is attached; it returns whether the policy's own
// link is to be dropped once it is. A policy attached to another cgroup
// is left alone. A policy in the slot of a follower of another cgroup
// (one that died) would leave that cgroup when ours replaces its check:
// refused.
func (f *Follower) takePolicy() (dropOwn bool, err error) {
	prog, err := PolicyProgram(f.pinDir)
	if prog == nil || err != nil {
		if err == nil {
			err = ClearSlot(f.objs.DnsPolicySlot) // a slot kept from a policy since removed
		}
		return false, err
	}
	defer prog.Close()
	own, cg, err := PolicyLink(f.pinDir)
	if err != nil {
		return false, err
	}
	if own != nil {
		own.Close()
		if cg != f.cgroupID {
			f.cfg.Log.Warn("the DNS policy of this table is attached to another cgroup: it keeps its own program", "pin", filepath.Join(f.pinDir, PinPolicyLink))
			return false, ClearSlot(f.objs.DnsPolicySlot)
		}
	} else {
		chk, ccg, err := pinnedCgroupLink(filepath.Join(f.pinDir, pinCheck), "mark check")
		if err != nil {
			return false, err
		}
		if chk != nil {
			chk.Close()
			if ccg != f.cgroupID {
				return false, fmt.Errorf("the DNS policy of this table runs inside the mark check pinned at %s, attached to another cgroup (id %d): "+
					"this follower would replace that check and leave the cgroup's queries unchecked; stop that follower first, or remove the policy",
					filepath.Join(f.pinDir, pinCheck), ccg)
			}
		}
	}
	if err := FillSlot(f.objs.DnsPolicySlot, prog); err != nil {
		if own == nil {
			return false, err // it runs in no other place than the check ours replaces
		}
		SlotRefused(f.cfg.Log, err)
		return false, ClearSlot(f.objs.DnsPolicySlot)
	}
	// A policy of an earlier version pinned only its link: pin its
	// program, which will run from the slot alone.
	path := filepath.Join(f.pinDir, PinPolicyProgram)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := prog.Pin(path); err != nil {
			return false, fmt.Errorf("pin the dns policy program: %w", err)
		}
	}
	return own != nil, nil
}

// givePolicyBack attaches the DNS policy that runs in the follower's slot
// as its own program again (pinned), before the follower's program is
// detached; it says whether there was one.
func (f *Follower) givePolicyBack() (bool, error) {
	if f.objs.DnsPolicySlot == nil {
		return false, nil
	}
	prog, err := SlotProgram(f.objs.DnsPolicySlot)
	if prog == nil || err != nil {
		return false, err
	}
	defer prog.Close()
	if err := AttachPolicy(f.pinDir, f.cfg.Cgroup, prog); err != nil {
		return true, fmt.Errorf("%w: the DNS policy stays in the follower's mark check, which stays pinned at %s", err, filepath.Join(f.pinDir, pinCheck))
	}
	return true, nil
}

// attachTakingPolicy attaches the follower's programs, a pinned DNS
// policy in its slot first, and drops the policy's own program once the
// follower's is attached. Under the directory's lock.
func (f *Follower) attachTakingPolicy() error {
	unlock, err := LockPins(f.pinDir)
	if err != nil {
		return err
	}
	defer unlock()
	dropOwn, err := f.takePolicy()
	if err != nil {
		return err
	}
	if err := f.attach(); err != nil {
		return err
	}
	if !dropOwn {
		return nil
	}
	if !HandOverPolicy(f.pinDir, f.cfg.Log) {
		return nil
	}
	f.cfg.Log.Info("the DNS policy runs inside the follower's program", "pin", filepath.Join(f.pinDir, PinPolicySlot))
	return nil
}
