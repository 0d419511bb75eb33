//go:build linux

package dnspolicy

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// DefaultPinRoot is the follower's pin root: the policy pins its program
// and maps beside the follower's, in the same per-table directory.
const DefaultPinRoot = "/sys/fs/bpf/egress"

// DefaultMaxEntries bounds the allow-list map (and so the kernel memory
// it takes: about 100 bytes an entry).
const DefaultMaxEntries = 262144

// Pin names in the per-table directory.
const (
	pinLink  = follow.PinPolicyLink
	pinAllow = "dns_allow"
	pinRing  = "dns_denials"
	pinStats = "dns_policy_stats"
)

// Config says where the policy runs.
type Config struct {
	Cgroup     string // cgroup v2 directory; default the mount's root
	Target     nft.Target
	Table      string
	PinRoot    string // default DefaultPinRoot
	Mode       Mode
	MaxEntries int // default DefaultMaxEntries
	Log        *slog.Logger
}

func (c *Config) defaults() error {
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Cgroup == "" {
		var err error
		if c.Cgroup, err = cgroupbpf.Mount(); err != nil {
			return err
		}
	}
	return cgroupbpf.Check(c.Cgroup)
}

// Installed is what Install put in place.
type Installed struct {
	Mode    Mode   `json:"mode"`
	Entries int    `json:"entries"`
	PinDir  string `json:"pin_dir"`
	Cgroup  string `json:"cgroup"`
	// Via says where the policy runs: ViaFollower or ViaOwn.
	Via string `json:"via"`
}

// Where the policy's program runs.
const (
	// ViaFollower: inside the DNS follower's egress program, by a tail
	// call (one program on the hook); see follow.PinPolicySlot.
	ViaFollower = "follower"
	// ViaOwn: as a program of its own on the cgroup's egress hook.
	ViaOwn = "own program"
	// ViaBoth: both at once (for a moment during a hand-over, or when the
	// policy's own link could not be dropped): a query passes only if
	// both allow it.
	ViaBoth = "own program and follower"
)

// Install loads the policy with entries and attaches it to the cgroup in
// place of the one there before (both run for a moment: a query passes
// only if both allow it). When a follower's mark check is pinned for the
// same table, namespace and cgroup, the policy goes in the follower's
// slot (an atomic replace of the one there), then its own link, if any,
// is dropped: it runs inside the follower's program. Otherwise it gets
// its own link, pinned: the policy stays when this process ends. The
// program is pinned too, so that a follower can take it, or give it its
// own link back. Mode Off removes it.
func Install(cfg Config, entries []Entry) (*Installed, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.Mode == Off {
		return nil, Remove(cfg)
	}
	if len(entries) > cfg.MaxEntries {
		return nil, fmt.Errorf("install dns policy: %d allowed names, over the bound of %d (dns_max_names)", len(entries), cfg.MaxEntries)
	}
	netns, err := netnsCookie(cfg.Target)
	if err != nil {
		return nil, err
	}
	dir, err := pinDir(cfg.PinRoot, cfg.Table, netns)
	if err != nil {
		return nil, err
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	var objs bpf.DnspolicyObjects
	if err := load(&objs, cfg.Mode, netns, key, len(entries), dir); err != nil {
		return nil, err
	}
	defer objs.Close()
	if err := fill(&objs, key, entries); err != nil {
		return nil, err
	}
	unlock, err := follow.LockPins(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	via, err := place(cfg, dir, objs.DnsPolicy)
	if err != nil {
		return nil, err
	}
	pinAllowMap(dir, objs.DnsAllow, cfg.Log)
	return &Installed{Mode: cfg.Mode, Entries: len(entries), PinDir: dir, Cgroup: cfg.Cgroup, Via: via}, nil
}

// place puts the loaded policy where it runs (under the directory's
// lock): the slot of a follower of the cgroup, or its own link; then it
// pins the program in place of the one before. A slot the kernel refuses
// the program for falls back to the own link, loudly, and is emptied once
// that link is attached: an older policy of the table left in it would go
// on checking the queries beside the new one, with its stale list.
func place(cfg Config, dir string, prog *ebpf.Program) (string, error) {
	cg, err := cgroupbpf.ID(cfg.Cgroup)
	if err != nil {
		return "", err
	}
	slot, err := follow.FollowerSlot(dir, cg)
	if err != nil {
		return "", err
	}
	via := ViaOwn
	if slot != nil {
		defer slot.Close()
		if err := follow.FillSlot(slot, prog); err != nil {
			follow.SlotRefused(cfg.Log, err)
		} else {
			via = ViaFollower
		}
	}
	if via == ViaOwn {
		if err := follow.AttachPolicy(dir, cfg.Cgroup, prog); err != nil {
			return "", err
		}
		if slot != nil {
			if err := follow.ClearSlot(slot); err != nil {
				return "", fmt.Errorf("take the old dns policy out of the follower's slot, which refused the new one (both check the queries, the old with its own list): %w", err)
			}
		}
	} else if !follow.HandOverPolicy(dir, cfg.Log) {
		via = ViaBoth
	}
	path := filepath.Join(dir, follow.PinPolicyProgram)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("unpin the dns policy program: %w", err)
	}
	if err := prog.Pin(path); err != nil {
		return "", fmt.Errorf("pin the dns policy program: %w", err)
	}
	return via, nil
}

// load loads the program with the map sized for n entries, sharing the
// pinned ring buffer and counters with earlier policies of the table.
func load(objs *bpf.DnspolicyObjects, mode Mode, netns uint64, key Key, n int, dir string) error {
	spec, err := policySpec(mode, netns, key, n)
	if err != nil {
		return err
	}
	return loadSpec(objs, spec, dir)
}

// policySpec is the policy's spec set for mode, netns and key, its maps
// sized for n entries.
func policySpec(mode Mode, netns uint64, key Key, n int) (*ebpf.CollectionSpec, error) {
	spec, err := bpf.LoadDnspolicy()
	if err != nil {
		return nil, fmt.Errorf("load dns policy spec: %w", err)
	}
	enf := uint32(0)
	if mode == Enforce {
		enf = 1
	}
	if err := spec.Variables["enforce"].Set(enf); err != nil {
		return nil, fmt.Errorf("set enforce: %w", err)
	}
	if err := spec.Variables["netns_cookie"].Set(netns); err != nil {
		return nil, fmt.Errorf("set netns_cookie: %w", err)
	}
	if err := spec.Variables["hash_k0"].Set(key[0]); err != nil {
		return nil, fmt.Errorf("set hash_k0: %w", err)
	}
	if err := spec.Variables["hash_k1"].Set(key[1]); err != nil {
		return nil, fmt.Errorf("set hash_k1: %w", err)
	}
	nb := fastSize(n)
	if err := spec.Variables["fast_mask"].Set(uint32(nb - 1)); err != nil {
		return nil, fmt.Errorf("set fast_mask: %w", err)
	}
	spec.Maps["dns_allow_fast"].MaxEntries = uint32(nb)
	spec.Maps["dns_allow"].MaxEntries = uint32(max(n, 1))
	spec.Maps["dns_allow"].Name = allowMapName(mode) // status reads the mode from it
	spec.Maps["dns_denials"].Pinning = ebpf.PinByName
	spec.Maps["dns_policy_stats"].Pinning = ebpf.PinByName
	return spec, nil
}

// loadSpec loads spec into objs, sharing the ring buffer and counters
// pinned in dir (pinned again when the pins are of another layout).
func loadSpec(objs *bpf.DnspolicyObjects, spec *ebpf.CollectionSpec, dir string) error {
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	err := cgroupbpf.Load(spec, objs, opts, "dns policy")
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		_ = os.Remove(filepath.Join(dir, pinRing))
		_ = os.Remove(filepath.Join(dir, pinStats))
		err = cgroupbpf.Load(spec, objs, opts, "dns policy")
	}
	return err
}

// newKey is a random hash key.
func newKey() (Key, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Key{}, fmt.Errorf("make a hash key: %w", err)
	}
	return Key{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}, nil
}

// fill puts the entries in the allow map, and their exact names in the
// fast table (sized by load for as many entries).
func fill(objs *bpf.DnspolicyObjects, key Key, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	hs := hashAll(key, entries)
	if err := fillFast(objs.DnsAllowFast, key, hs); err != nil {
		return err
	}
	m := objs.DnsAllow
	keys := make([]bpf.DnspolicyAllowKey, len(hs))
	vals := make([]uint8, len(hs))
	for i, e := range hs {
		keys[i] = bpf.DnspolicyAllowKey{Uid: e.uid, Kind: e.kind, Hash: e.hash}
		vals[i] = 1
	}
	return batchUpdate(m, keys, vals, "the dns allow map")
}

// batchUpdate puts keys and vals in map m, 4096 at a time.
func batchUpdate[K, V any](m *ebpf.Map, keys []K, vals []V, what string) error {
	for i := 0; i < len(keys); i += 4096 {
		j := min(i+4096, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], vals[i:j], nil); err != nil {
			return fmt.Errorf("fill %s: %w", what, err)
		}
	}
	return nil
}

// fillFast writes the fast table's buckets that hold a fingerprint.
func fillFast(m *ebpf.Map, key Key, hs []hashedEntry) error {
	tab, _ := buildFast(key, hs, int(m.MaxEntries()))
	var keys []uint32
	var vals []bpf.DnspolicyAllowBucket
	for i, b := range tab {
		if b[0] != 0 {
			keys = append(keys, uint32(i))
			vals = append(vals, bpf.DnspolicyAllowBucket{Fp: b})
		}
	}
	return batchUpdate(m, keys, vals, "the dns allow fast table")
}

// pinAllowMap pins the new allow map in place of the old one (status
// reads the mode and size from it).
func pinAllowMap(dir string, allow *ebpf.Map, log *slog.Logger) {
	_ = os.Remove(filepath.Join(dir, pinAllow))
	if err := allow.Pin(filepath.Join(dir, pinAllow)); err != nil {
		log.Warn("pin the dns allow map (for status)", "err", err)
	}
}

// Remove detaches the policy of the table and forgets its maps. Nothing
// there is no error.
func Remove(cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	netns, err := netnsCookie(cfg.Target)
	if err != nil {
		return err
	}
	dir := policyDir(cfg.PinRoot, cfg.Table, netns)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	unlock, err := follow.LockPins(dir)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	// The follower's slot, of whatever cgroup: the table's policy goes.
	if slot, err := ebpf.LoadPinnedMap(filepath.Join(dir, follow.PinPolicySlot), nil); err == nil {
		errs = append(errs, follow.ClearSlot(slot))
		slot.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("open the follower's dns policy slot: %w", err))
	}
	errs = append(errs, follow.DropPolicyLink(dir))
	for _, p := range []string{follow.PinPolicyProgram, pinAllow, pinRing, pinStats} {
		if err := os.Remove(filepath.Join(dir, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// netnsCookie is what bpf_get_netns_cookie gives for the target's
// sockets; a namespace of another user namespace is refused (its uids are
// not the host's), as the follower does.
func netnsCookie(t nft.Target) (uint64, error) { return follow.EnforcedNetns(t) }

// pinDir is the table's pin directory, the follower's: made when missing.
func pinDir(root, table string, netns uint64) (string, error) {
	return follow.PinDir(root, table, netns)
}

// policyDir is the table's pin directory, not made: the follower's.
func policyDir(root, table string, netns uint64) string { return follow.PinPath(root, table, netns) }

// allowMapName gives the kernel name of the allow map: it says the mode.
func allowMapName(m Mode) string {
	if m == Enforce {
		return "dns_allow_enf"
	}
	return "dns_allow_aud"
}
