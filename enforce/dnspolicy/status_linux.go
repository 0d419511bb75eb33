//go:build linux

package dnspolicy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// Stats are the policy's kernel counters, since its ring and counters
// were first pinned for the table.
type Stats struct {
	Queries   uint64 `json:"queries"`   // queries checked
	Allowed   uint64 `json:"allowed"`   // allowed by the list
	Denied    uint64 `json:"denied"`    // not allowed, dropped (enforce)
	Audited   uint64 `json:"audited"`   // not allowed, passed (audit)
	Malformed uint64 `json:"malformed"` // not parsed (dropped in enforce)
	Lost      uint64 `json:"lost"`      // reports the ring had no room for
}

// Report is the state of the table's DNS policy.
type Report struct {
	Configured Mode `json:"configured"`
	Attached   bool `json:"attached"`
	Mode       Mode `json:"mode,omitempty"` // of the attached program
	// Via says where the attached policy runs: "follower" (inside the
	// DNS follower's egress program), "own program", or both.
	Via     string `json:"via,omitempty"`
	Entries int    `json:"entries"`
	Cgroup  string `json:"cgroup"`
	Stats   Stats  `json:"stats"`
	// Problem says, in words for the operator, why what runs is not what
	// is configured ("" when it is).
	Problem string `json:"problem,omitempty"`
}

// Status reads what is attached for the table and compares it with
// cfg.Mode. It never fails: what it cannot read is the problem.
func Status(cfg Config) Report {
	r := Report{Configured: cfg.Mode, Cgroup: cfg.Cgroup}
	if cfg.Mode == "" {
		r.Configured = Off
	}
	if err := cfg.defaults(); err != nil {
		r.Problem = err.Error()
		return r
	}
	r.Cgroup = cfg.Cgroup
	netns, err := netnsCookie(cfg.Target)
	if err != nil {
		r.Problem = err.Error()
		return r
	}
	dir := policyDir(cfg.PinRoot, cfg.Table, netns)
	if err := r.read(dir, cfg.Cgroup); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.Problem = err.Error()
	}
	switch {
	case r.Problem != "":
	case r.Configured != Off && !r.Attached:
		r.Problem = fmt.Sprintf("dns_policy is %s but no DNS policy program is attached to %s: DNS queries are NOT checked; run egress-enforce dns-policy apply", r.Configured, cfg.Cgroup)
	case r.Configured != Off && r.Mode != r.Configured:
		r.Problem = fmt.Sprintf("dns_policy is %s but the attached program runs in %s: run egress-enforce dns-policy apply", r.Configured, r.Mode)
	case r.Configured == Off && r.Attached:
		r.Problem = fmt.Sprintf("dns_policy is off but a DNS policy in %s is still attached: run egress-enforce dns-policy remove", r.Mode)
	}
	return r
}

func (r *Report) read(dir, cgroup string) error {
	if s, err := readStats(filepath.Join(dir, pinStats)); err == nil {
		r.Stats = s
	}
	want, err := cgroupbpf.ID(cgroup)
	if err != nil {
		return err
	}
	inFollower, err := inFollowerSlot(dir, want)
	if err != nil {
		return err
	}
	own, err := ownAttached(dir, cgroup, want)
	switch {
	case err != nil && !(inFollower && errors.Is(err, os.ErrNotExist)):
		return err
	case own && inFollower:
		r.Via = ViaBoth
	case own:
		r.Via = ViaOwn
	default:
		r.Via = ViaFollower
	}
	r.Attached = true
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinAllow), nil)
	if err != nil {
		return fmt.Errorf("open the pinned dns allow map: %w", err)
	}
	defer m.Close()
	mi, err := m.Info()
	if err != nil {
		return fmt.Errorf("read the dns allow map: %w", err)
	}
	r.Mode = Audit
	if mi.Name == allowMapName(Enforce) {
		r.Mode = Enforce
	}
	r.Entries = int(mi.MaxEntries)
	return nil
}

func readStats(path string) (Stats, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return Stats{}, err
	}
	defer m.Close()
	var out [6]uint64
	for i := range out {
		var per []uint64
		if err := m.Lookup(uint32(i), &per); err != nil {
			return Stats{}, fmt.Errorf("read dns policy counters: %w", err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return Stats{Queries: out[0], Allowed: out[1], Denied: out[2], Audited: out[3], Malformed: out[4], Lost: out[5]}, nil
}

// ownAttached says whether the policy's own pinned link is attached to
// the cgroup want (os.ErrNotExist when none is pinned).
func ownAttached(dir, cgroup string, want uint64) (bool, error) {
	l, err := link.LoadPinnedLink(filepath.Join(dir, pinLink), nil)
	if err != nil {
		return false, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("read the pinned dns policy: %w", err)
	}
	if c := info.Cgroup(); c == nil || c.CgroupId != want {
		return false, fmt.Errorf("the pinned dns policy in %s is not attached to %s", dir, cgroup)
	}
	return true, nil
}

// inFollowerSlot says whether the slot of a follower of the cgroup want
// holds the pinned policy program.
func inFollowerSlot(dir string, want uint64) (bool, error) {
	slot, err := follow.FollowerSlot(dir, want)
	if slot == nil || err != nil {
		return false, err
	}
	defer slot.Close()
	p, err := follow.SlotProgram(slot)
	if p == nil || err != nil {
		return false, err
	}
	defer p.Close()
	pinned, err := ebpf.LoadPinnedProgram(filepath.Join(dir, follow.PinPolicyProgram), nil)
	if err != nil {
		return false, fmt.Errorf("the follower's slot in %s holds a program, but no dns policy program is pinned: %w", dir, err)
	}
	defer pinned.Close()
	a, err1 := p.Info()
	b, err2 := pinned.Info()
	if err := errors.Join(err1, err2); err != nil {
		return false, fmt.Errorf("read the dns policy programs: %w", err)
	}
	ida, _ := a.ID()
	idb, _ := b.ID()
	if ida != idb {
		return false, fmt.Errorf("the follower's slot in %s holds another program than the pinned dns policy: run egress-enforce dns-policy apply", dir)
	}
	return true, nil
}
