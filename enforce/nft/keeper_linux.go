//go:build linux

package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
)

// Keeper keeps the service sets of an applied plan true to the cgroups
// that exist: systemd removes a unit's cgroup and creates it again on
// every restart, with a new id. When a service's cgroup appears, its
// elements are added with the new id; when it goes, they are removed (a
// service that is not running has no elements). Inotify on the services'
// parent directories tells at once; a periodic check catches what a
// watch could not see.
type Keeper struct {
	n   *Netlink
	cg  CgroupIDs
	p   *plan.Plan
	ids map[string]uint64 // installed: the id each service's elements have
	// elems are the plan's elements of each service, by set.
	elems map[string]map[string][]plan.Element
	// stage is the set of staged enforcement each staged service's id
	// is in (enforce_services or audit_services).
	stage   map[string]string
	started bool
}

// ServiceChange is one service whose elements a Keeper replaced.
type ServiceChange struct {
	Service  string `json:"service"`
	From     uint64 `json:"from_id,omitempty"` // 0: it was not running
	To       uint64 `json:"to_id,omitempty"`   // 0: it stopped
	Elements int    `json:"elements"`
	// Took is from the event (or check) that found the change to the
	// kernel's acknowledgement.
	Took time.Duration `json:"took_ns"`
}

// NewKeeper keeps p's service sets (p as applied, before Running) in the
// target's table current.
func (n *Netlink) NewKeeper(p *plan.Plan, cg CgroupIDs) *Keeper {
	k := &Keeper{n: n, cg: cg, p: p, ids: map[string]uint64{}, elems: map[string]map[string][]plan.Element{}, stage: map[string]string{}}
	for _, s := range p.ServiceSets {
		for _, svc := range s.Services {
			k.stage[svc] = s.Name
			if k.elems[svc] == nil {
				k.elems[svc] = map[string][]plan.Element{}
			}
		}
	}
	for _, s := range p.Sets {
		if !plan.IsServiceSet(s.Name) {
			continue
		}
		for _, e := range s.Elements {
			if k.elems[e.Service] == nil {
				k.elems[e.Service] = map[string][]plan.Element{}
			}
			k.elems[e.Service][s.Name] = append(k.elems[e.Service][s.Name], e)
		}
	}
	return k
}

// Services are the services the keeper keeps, sorted.
func (k *Keeper) Services() []string {
	out := make([]string, 0, len(k.elems))
	for s := range k.elems {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Start reads the service sets in the kernel and makes them what the
// cgroups that exist now say: elements of an id no service has are
// removed, the elements of running services added.
func (k *Keeper) Start() error {
	k.started = true
	clear(k.ids)
	want := map[uint64]string{}
	for s := range k.elems {
		if id, ok := k.cg.ID(s); ok {
			want[id] = s
			k.ids[s] = id
		}
	}
	return k.n.batch(func(c *nftables.Conn) error {
		tab, err := k.n.ourTable(c, k.p.Table)
		if err != nil || tab == nil {
			return errors.Join(err, fmt.Errorf("table inet %s is missing", k.p.Table))
		}
		for _, name := range []string{plan.SetService4, plan.SetService6} {
			s, err := c.GetSetByName(tab, name)
			if err != nil {
				return fmt.Errorf("read set %s: %w", name, err)
			}
			have, err := c.GetSetElements(s)
			if err != nil {
				return fmt.Errorf("list elements of set %s: %w", name, err)
			}
			var stale []nftables.SetElement
			for _, e := range have {
				if len(e.Key) >= 8 && want[nativeID(e.Key)] == "" {
					stale = append(stale, nftables.SetElement{Key: e.Key})
				}
			}
			if err := deleteChunks(c, s, stale); err != nil {
				return err
			}
			for id, svc := range want {
				if err := addChunks(c, s, k.keyed(svc, name, id, true)); err != nil {
					return err
				}
			}
		}
		return k.startStage(c, tab, want)
	})
}

// startStage makes the sets of staged enforcement by service hold the ids
// of the staged services that run now, and no other.
func (k *Keeper) startStage(c *nftables.Conn, tab *nftables.Table, want map[uint64]string) error {
	for _, ss := range k.p.ServiceSets {
		s, err := c.GetSetByName(tab, ss.Name)
		if err != nil {
			return fmt.Errorf("read set %s: %w", ss.Name, err)
		}
		have, err := c.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("list elements of set %s: %w", ss.Name, err)
		}
		var stale []nftables.SetElement
		for _, e := range have {
			if len(e.Key) != 8 || k.stage[want[nativeID(e.Key)]] != ss.Name {
				stale = append(stale, nftables.SetElement{Key: e.Key})
			}
		}
		if err := deleteChunks(c, s, stale); err != nil {
			return err
		}
		for id, svc := range want {
			if k.stage[svc] == ss.Name {
				if err := c.SetAddElements(s, []nftables.SetElement{{Key: binaryutil.NativeEndian.PutUint64(id)}}); err != nil {
					return fmt.Errorf("add elements to set %s: %w", ss.Name, err)
				}
			}
		}
	}
	return nil
}

// syncStage replaces the ids of the staged services that changed in
// their set of staged enforcement, in the transaction of their elements.
func (k *Keeper) syncStage(c *nftables.Conn, changes []ServiceChange) error {
	for _, ch := range changes {
		name := k.stage[ch.Service]
		if name == "" {
			continue
		}
		s := &nftables.Set{Table: tableOf(k.p.Table), Name: name, KeyType: nftables.TypeCGroupV2}
		if ch.From != 0 {
			if err := c.SetDeleteElements(s, []nftables.SetElement{{Key: binaryutil.NativeEndian.PutUint64(ch.From)}}); err != nil {
				return fmt.Errorf("delete elements of set %s: %w", name, err)
			}
		}
		if ch.To != 0 {
			if err := c.SetAddElements(s, []nftables.SetElement{{Key: binaryutil.NativeEndian.PutUint64(ch.To)}}); err != nil {
				return fmt.Errorf("add elements to set %s: %w", name, err)
			}
		}
	}
	return nil
}

func nativeID(k []byte) uint64 { return binaryutil.NativeEndian.Uint64(k[:8]) }

// keyed are a service's elements of one set with id; with comments to add.
func (k *Keeper) keyed(svc, set string, id uint64, comments bool) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range k.elems[svc][set] {
		el := nftables.SetElement{Key: serviceElementKey(id, e)}
		if comments {
			el.Comment = e.Comment
		}
		out = append(out, el)
	}
	return out
}

func addChunks(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	for _, ch := range chunks(elems) {
		if err := c.SetAddElements(s, ch); err != nil {
			return fmt.Errorf("add elements to set %s: %w", s.Name, err)
		}
	}
	return nil
}

func deleteChunks(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	for _, ch := range chunks(elems) {
		if err := c.SetDeleteElements(s, ch); err != nil {
			return fmt.Errorf("delete elements of set %s: %w", s.Name, err)
		}
	}
	return nil
}

// Sync looks at every service's cgroup and replaces the elements of those
// whose id changed (created again, stopped, started), in one transaction.
func (k *Keeper) Sync(since time.Time) ([]ServiceChange, error) {
	var changes []ServiceChange
	for _, svc := range k.Services() {
		id, _ := k.cg.ID(svc)
		if id != k.ids[svc] {
			n := len(k.elems[svc][plan.SetService4]) + len(k.elems[svc][plan.SetService6])
			changes = append(changes, ServiceChange{Service: svc, From: k.ids[svc], To: id, Elements: n})
		}
	}
	if len(changes) == 0 {
		return nil, nil
	}
	err := k.n.batch(func(c *nftables.Conn) error {
		for _, name := range []string{plan.SetService4, plan.SetService6} {
			s := &nftables.Set{Table: tableOf(k.p.Table), Name: name}
			for _, ch := range changes {
				if ch.From != 0 {
					if err := deleteChunks(c, s, k.keyed(ch.Service, name, ch.From, false)); err != nil {
						return err
					}
				}
				if ch.To != 0 {
					if err := addChunks(c, s, k.keyed(ch.Service, name, ch.To, true)); err != nil {
						return err
					}
				}
			}
		}
		return k.syncStage(c, changes)
	})
	if err != nil {
		// A fresh look next time: the kernel's sets are what Start reads.
		return nil, errors.Join(fmt.Errorf("update service sets: %w", err), k.Start())
	}
	for i := range changes {
		if changes[i].To == 0 {
			delete(k.ids, changes[i].Service)
		} else {
			k.ids[changes[i].Service] = changes[i].To
		}
		changes[i].Took = time.Since(since)
	}
	return changes, nil
}

// KeeperCheckEvery is the periodic check of Run, for what inotify misses
// (a parent directory created after Run watched, a lost event).
const KeeperCheckEvery = 2 * time.Second

// Run calls Start (unless the caller did), then Sync whenever a cgroup
// directory is created or removed next to a service, and every
// KeeperCheckEvery; onChange gets every change. It returns when ctx
// ends, or on an error of the kernel.
func (k *Keeper) Run(ctx context.Context, onChange func(ServiceChange)) error {
	if !k.started {
		if err := k.Start(); err != nil {
			return err
		}
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	defer unix.Close(fd)
	watched := map[string]bool{}
	watch := func() {
		for _, svc := range k.Services() {
			dir := filepath.Dir(filepath.Join(k.cg.Mount, svc))
			if watched[dir] {
				continue
			}
			if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_DELETE|unix.IN_ONLYDIR|unix.IN_DELETE_SELF); err == nil {
				watched[dir] = true
			}
		}
	}
	watch()
	events := make(chan struct{}, 1)
	var relist atomic.Bool
	go readInotify(ctx, fd, events, &relist)
	tick := time.NewTicker(KeeperCheckEvery)
	defer tick.Stop()
	for {
		var at time.Time
		select {
		case <-ctx.Done():
			return nil
		case <-events:
			at = time.Now()
		case at = <-tick.C:
		}
		if relist.Swap(false) {
			clear(watched)
		}
		watch()
		changes, err := k.Sync(at)
		for _, c := range changes {
			onChange(c)
		}
		if err != nil {
			return err
		}
	}
}

// readInotify signals events on every batch of inotify events until ctx
// ends; relist is set when a watched directory went away (Run watches it
// again when it is back).
func readInotify(ctx context.Context, fd int, events chan<- struct{}, relist *atomic.Bool) {
	buf := make([]byte, 64<<10)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		if n, err := unix.Poll(pfd, 200); err != nil || n == 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			continue
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			// struct inotify_event: wd, mask, cookie, len, name.
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			if mask&(unix.IN_DELETE_SELF|unix.IN_IGNORED) != 0 {
				relist.Store(true)
			}
			off += unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
		}
		select {
		case events <- struct{}{}:
		default:
		}
	}
}
