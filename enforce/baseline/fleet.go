package baseline

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// ReadExport reads a file written by "egress-learn export" and checks it
// (CheckExport): an export is another host's word, and a fleet is only as
// safe as its least safe host. Warnings say what was left out.
func ReadExport(path string) (*store.Export, []string, error) {
	data, err := readExportBytes(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read export: %w", err)
	}
	var e store.Export
	if err := store.DecodeExport(data, &e); err != nil {
		return nil, nil, fmt.Errorf("read export %s: not an egress baseline: %w", path, err)
	}
	if err := checkFormat(path, &e); err != nil {
		return nil, nil, err
	}
	warnings, err := CheckExport(&e)
	if err != nil {
		return nil, nil, fmt.Errorf("read export %s: %w", path, err)
	}
	for i, w := range warnings {
		warnings[i] = path + ": " + w
	}
	return &e, warnings, nil
}

// MaxExportBytes bounds the size of one export file: a 1M-flow export is
// about 230 MB, and reading one takes about ten times its size. A larger
// file (another host's word, or a file that grows while it is read) is
// refused before it is read whole.
const MaxExportBytes = 1 << 30

// MaxFleetBytes bounds the export files of one fleet together: every
// export is held until they are merged.
const MaxFleetBytes = 4 << 30

// The bounds in force (tests lower them).
var (
	maxExportBytes int64 = MaxExportBytes
	maxFleetBytes  int64 = MaxFleetBytes
)

// CheckExportSize refuses an export file over MaxExportBytes, by its
// size: for a reader that reads the file on its own.
func CheckExportSize(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	if st.Mode().IsRegular() && st.Size() > maxExportBytes {
		return fmt.Errorf("read export %s: %w", path, exportTooLarge(st.Size()))
	}
	return nil
}

func exportTooLarge(n int64) error {
	return fmt.Errorf("%d bytes or more, over the bound of an export (%d bytes)", n, maxExportBytes)
}

// readExportBytes reads the export at path, up to maxExportBytes: what
// is longer is refused without reading the rest.
func readExportBytes(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readExportFrom(f, path)
}

// readExportFrom reads export f (opened from path) from where it is, up
// to maxExportBytes, as readExportBytes does.
func readExportFrom(f *os.File, path string) ([]byte, error) {
	var size int64
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		if size = st.Size(); size > maxExportBytes {
			return nil, fmt.Errorf("%s: %w", path, exportTooLarge(size))
		}
	}
	var b bytes.Buffer
	b.Grow(int(size) + bytes.MinRead) // room to see the end: no copy
	if _, err := b.ReadFrom(io.LimitReader(f, maxExportBytes+1)); err != nil {
		return nil, err
	}
	if n := int64(b.Len()); n > maxExportBytes { // it grew while read
		return nil, fmt.Errorf("%s: %w", path, exportTooLarge(n))
	}
	return b.Bytes(), nil
}

// CheckExport refuses an export whose host name, user names, addresses or
// protocols are not what a learner writes: a host name and user names of
// letters, digits, '.', '_' and '-' (a user name may end in '$'),
// addresses without a zone (IPv4-mapped ones are unmapped), a protocol
// number. A hostname of a flow that is not a DNS name (a forged DNS answer
// can put anything there) is left out with a warning. Ports and protocols
// are numbers by type (JSON refuses what does not fit).
func CheckExport(e *store.Export) ([]string, error) {
	if err := checkExportHeader(e); err != nil {
		return nil, err
	}
	return checkFlows(e)
}

// checkFlows is CheckExport of the flows.
func checkFlows(e *store.Export) ([]string, error) {
	var warnings []string
	for i := range e.Flows {
		var err error
		if warnings, err = checkFlow(i, &e.Flows[i], warnings); err != nil {
			return nil, err
		}
	}
	return warnings, nil
}

// checkExportHeader is CheckExport of the host and user names.
func checkExportHeader(e *store.Export) error {
	if !validHost(e.Host, 253, false) {
		return fmt.Errorf("host %q is not a host name (letters, digits, '.', '_', '-'; 253 at most)", e.Host)
	}
	for uid, name := range e.Users {
		if !validHost(name, 64, true) {
			return fmt.Errorf("user %q (uid %d) is not a user name (letters, digits, '.', '_', '-', a final '$'; 64 at most)", name, uid)
		}
	}
	return nil
}

// checkFlow is CheckExport of flow f, the export's i-th: its warnings are
// appended to warnings.
func checkFlow(i int, f *store.Flow, warnings []string) ([]string, error) {
	if err := plan.CheckAddr(f.IP); err != nil {
		return nil, fmt.Errorf("flow #%d (uid %d, port %d): %w", i+1, f.UID, f.Port, err)
	}
	f.IP = f.IP.Unmap()
	if f.Proto == 0 {
		return nil, fmt.Errorf("flow #%d (uid %d, %s): no protocol", i+1, f.UID, f.IP)
	}
	names := f.Hostnames[:0:0]
	for _, n := range f.Hostnames {
		if n := strings.ToLower(n); plan.ValidName(n, false) {
			names = append(names, n)
			continue
		}
		warnings = append(warnings, fmt.Sprintf("flow uid %d %s %s: hostname %q left out: not a DNS name",
			f.UID, plan.ProtoName(f.Proto), netip.AddrPortFrom(f.IP, f.Port), n))
	}
	f.Hostnames = names
	// A learner keeps a flow's lists distinct and bounded (store.Max*):
	// longer ones are forged, and each costs its length at every list
	// they meet (a flow's services, a fleet's union of names). And a
	// learner writes no string longer than a path: one of 1 GB would be
	// copied into every list and plan it meets.
	strLen := func(s string) int { return len(s) }
	var long, over [5]uint64
	f.Hostnames, long[0], over[0] = keptOf(f.Hostnames, store.MaxHostnames, strLen)
	f.Processes, long[1], over[1] = keptOf(f.Processes, store.MaxProcesses, strLen)
	f.Comms, long[2], over[2] = keptOf(f.Comms, store.MaxProcesses, func(c store.ProcessComm) int { return max(len(c.Exe), len(c.Comm)) })
	f.Cgroups, long[3], over[3] = keptOf(f.Cgroups, store.MaxCgroups, strLen)
	f.Presented, long[4], over[4] = keptOf(f.Presented, store.MaxPresented, strLen)
	at := netip.AddrPortFrom(f.IP, f.Port)
	if n := long[1] + long[2] + long[3] + long[4]; n > 0 { // hostnames are DNS names
		f.Dropped += n
		warnings = append(warnings, fmt.Sprintf("flow uid %d %s %s: %d processes, %d comms, %d cgroups, %d presented names left out: longer than a learner writes (%d bytes)",
			f.UID, plan.ProtoName(f.Proto), at, long[1], long[2], long[3], long[4], MaxExportString))
	}
	if n := over[0] + over[1] + over[2] + over[3] + over[4]; n > 0 {
		f.Dropped += n
		warnings = append(warnings, fmt.Sprintf("flow uid %d %s %s: %d hostnames, %d processes, %d comms, %d cgroups, %d presented names left out: more than a learner keeps (%d, %d, %d, %d, %d)",
			f.UID, plan.ProtoName(f.Proto), at, over[0], over[1], over[2], over[3], over[4],
			store.MaxHostnames, store.MaxProcesses, store.MaxProcesses, store.MaxCgroups, store.MaxPresented))
	}
	return warnings, nil
}

// MaxExportString bounds a string of a flow's lists in an export (a
// process, comm, cgroup or presented name): PATH_MAX, a cgroup path's
// longest. Hostnames are DNS names (253 bytes at most).
const MaxExportString = 4096

// keptOf is list as a learner keeps it (in place: the list is the
// caller's): without the entries whose size is over MaxExportString
// (counted in long), without repeats (not counted), and cut at max
// entries (the rest counted in over). A learner's list stays as it is.
func keptOf[T comparable](list []T, max int, size func(T) int) (out []T, long, over uint64) {
	out = list[:0]
	for _, v := range list {
		switch {
		case size(v) > MaxExportString:
			long++
		case slices.Contains(out, v): // out holds max entries at most
		case len(out) < max:
			out = append(out, v)
		default:
			over++
		}
	}
	clear(list[len(out):]) // no strings held by what is left out
	return out, long, over
}

// validHost accepts letters, digits, '.', '_' and '-', not first, up to
// max bytes; with user, a final '$' too.
func validHost(s string, max int, user bool) bool {
	if user {
		s = strings.TrimSuffix(s, "$")
	}
	if s == "" || len(s) > max || s[0] == '-' || s[0] == '.' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Merged is a role baseline built from several hosts' exports.
type Merged struct {
	Flows []store.Flow
	// Hosts lists, per flow, the hosts that saw it; or AllHosts, when set,
	// saw every flow (one export), and Hosts is nil.
	Hosts    map[store.FlowKey][]string
	AllHosts []string
	// Warnings say where the hosts disagree in a way that matters, such as
	// one user name with different UIDs (the rules match UIDs).
	Warnings []string
}

// Merge unites exports: a flow seen by several hosts has their hits added,
// the widest seen interval, the union of names and processes, and the list
// of hosts. Retired flows are left out.
func Merge(exports []*store.Export) *Merged { return merge(exports, false) }

// merge is Merge; with reuse, a single export's flows may become the
// merged ones (the caller no longer needs the export's).
func merge(exports []*store.Export, reuse bool) *Merged {
	var m *Merged
	if len(exports) == 1 {
		m = mergeOne(exports[0], reuse)
	}
	if m == nil {
		m = mergeFlows(exports)
	}
	m.Warnings = uidWarnings(exports)
	return m
}

// mergeFlows adds up the flows of the exports.
func mergeFlows(exports []*store.Export) *Merged {
	m := &Merged{Hosts: map[store.FlowKey][]string{}}
	by := map[store.FlowKey]*store.Flow{}
	long := map[store.FlowKey]*listSets{} // the flows whose lists grew long
	var short listSets                    // stays empty: short lists are searched
	// A flow's hosts are appended in export order: the host of an export
	// is already there when it is the last one, unless an earlier export
	// has the same host name (then the list is searched).
	shared, named := make([]bool, len(exports)), map[string]bool{}
	for i, e := range exports {
		shared[i], named[e.Host] = named[e.Host], true
	}
	for i, e := range exports {
		for _, f := range e.Flows {
			if f.State(e.Exported, 0) == store.StateRetired {
				continue
			}
			cur, ok := by[f.FlowKey]
			if !ok {
				g := f
				g.Approval = store.Approval{}
				g.Hostnames = slices.Clone(f.Hostnames)
				g.Processes = slices.Clone(f.Processes)
				g.Comms = slices.Clone(f.Comms)
				by[f.FlowKey] = &g
				m.Hosts[f.FlowKey] = []string{e.Host}
				continue
			}
			cur.Hits += f.Hits
			store.WidenSeen(&cur.FirstSeen, &cur.LastSeen, f.FirstSeen, f.LastSeen)
			s := long[f.FlowKey]
			if s == nil {
				if max(len(cur.Hostnames)+len(f.Hostnames), len(cur.Processes)+len(f.Processes), len(cur.Comms)+len(f.Comms)) > longList {
					s = new(listSets)
					long[f.FlowKey] = s
				} else {
					s = &short
				}
			}
			cur.Hostnames = union(cur.Hostnames, f.Hostnames, &s.names)
			cur.Processes = union(cur.Processes, f.Processes, &s.procs)
			cur.Comms = union(cur.Comms, f.Comms, &s.comms)
			if hosts := m.Hosts[f.FlowKey]; hosts[len(hosts)-1] != e.Host && (!shared[i] || !slices.Contains(hosts, e.Host)) {
				m.Hosts[f.FlowKey] = append(hosts, e.Host)
			}
		}
	}
	for _, f := range by {
		m.Flows = append(m.Flows, *f)
	}
	slices.SortFunc(m.Flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
	return m
}

// uidWarnings says which user names have different UIDs across (or
// within) the exports.
func uidWarnings(exports []*store.Export) []string {
	uidOf := map[string]map[uint32][]string{} // user name -> uid -> hosts
	for _, e := range exports {
		for uid, name := range e.Users {
			if uidOf[name] == nil {
				uidOf[name] = map[uint32][]string{}
			}
			uidOf[name][uid] = append(uidOf[name][uid], e.Host)
		}
	}
	var warnings []string
	names := make([]string, 0, len(uidOf))
	for n := range uidOf {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if len(uidOf[n]) < 2 {
			continue
		}
		var parts []string
		for uid, hosts := range uidOf[n] {
			parts = append(parts, fmt.Sprintf("uid %d on %s", uid, strings.Join(hosts, ",")))
		}
		slices.Sort(parts)
		warnings = append(warnings, fmt.Sprintf("user %s has different UIDs (%s): the rules match UIDs, so align them across the fleet", n, strings.Join(parts, "; ")))
	}
	return warnings
}

// mergeOne is Merge of one export whose flows are distinct (as an export
// of egress-learn's is): nothing to add up, so the flows are taken as
// they are, in key order, without their approvals. Nil when two flows have
// the same key: Merge then adds them up. With reuse, the merged flows are
// e's, changed where they are (a 100,000-flow export: 25 MB not copied).
func mergeOne(e *store.Export, reuse bool) *Merged {
	if !slices.IsSortedFunc(e.Flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) }) {
		e.Flows = sortedFlows(e.Flows)
	}
	for i := 1; i < len(e.Flows); i++ {
		if e.Flows[i-1].FlowKey == e.Flows[i].FlowKey {
			return nil
		}
	}
	m := &Merged{AllHosts: []string{e.Host}}
	if !reuse {
		m.Flows = make([]store.Flow, 0, len(e.Flows))
		for _, f := range e.Flows {
			if f.State(e.Exported, 0) != store.StateRetired {
				f.Approval = store.Approval{}
				m.Flows = append(m.Flows, f)
			}
		}
		return m
	}
	kept := 0
	for i := range e.Flows {
		f := &e.Flows[i]
		if f.State(e.Exported, 0) == store.StateRetired {
			continue
		}
		f.Approval = store.Approval{}
		if kept != i {
			e.Flows[kept] = *f
		}
		kept++
	}
	clear(e.Flows[kept:]) // no names held by what is left out
	m.Flows, e.Flows = e.Flows[:kept], nil
	return m
}

// sortedFlows is a copy of flows in key order (sorting their indexes:
// a flow is large to move).
func sortedFlows(flows []store.Flow) []store.Flow {
	idx := make([]int32, len(flows))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int { return flows[a].FlowKey.Compare(flows[b].FlowKey) })
	out := make([]store.Flow, len(flows))
	for i, j := range idx {
		out[i] = flows[j]
	}
	return out
}

// longList is how long a merged flow's list may grow before its entries
// are kept in a set: a flow's list holds up to 32 entries of each export,
// and an export may repeat a flow (or a fleet have many hosts), so a
// search of the list per entry would cost its square.
const longList = 64

// listSets are the entries of a merged flow's lists, once they are long.
type listSets struct {
	names, procs map[string]bool
	comms        map[store.ProcessComm]bool
}

// union is a with the entries of b it lacks appended, in b's order; set
// holds a's entries once a and b are longer than longList together (made
// then).
func union[T comparable](a, b []T, set *map[T]bool) []T {
	if *set == nil && len(a)+len(b) <= longList {
		for _, v := range b {
			if !slices.Contains(a, v) {
				a = append(a, v)
			}
		}
		return a
	}
	if *set == nil {
		*set = make(map[T]bool, len(a)+len(b))
		for _, v := range a {
			(*set)[v] = true
		}
	}
	for _, v := range b {
		if !(*set)[v] {
			(*set)[v] = true
			a = append(a, v)
		}
	}
	return a
}

// ReadFleet reads the exports at paths (each checked, see ReadExport) and
// merges them; warn hears what was left out and where the hosts disagree.
// source names the merged baseline ("2 exports (hosts a, b)").
func ReadFleet(paths []string, warn func(string)) (m *Merged, source string, err error) {
	var exports []*store.Export
	var hosts []string
	if err := checkFleetSize(paths); err != nil {
		return nil, "", err
	}
	for _, path := range paths {
		e, warnings, err := ReadExport(path)
		if err != nil {
			return nil, "", err
		}
		for _, w := range warnings {
			warn(w)
		}
		exports = append(exports, e)
		hosts = append(hosts, e.Host)
	}
	m = merge(exports, true) // the exports are this function's
	for _, w := range m.Warnings {
		warn(w)
	}
	return m, fleetSource(hosts), nil
}

// checkFleetSize refuses a fleet whose export files are together over
// maxFleetBytes (each is held until the merge), by their sizes.
func checkFleetSize(paths []string) error {
	var total int64
	for _, path := range paths {
		if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
			total += st.Size()
		}
	}
	if total > maxFleetBytes {
		return fmt.Errorf("read fleet: %d exports of %d bytes in all, over the bound of a fleet (%d bytes)", len(paths), total, maxFleetBytes)
	}
	return nil
}

// fleetSource is what a plan says it was built from: the exports' hosts.
func fleetSource(hosts []string) string {
	return fmt.Sprintf("%d exports (hosts %s)", len(hosts), strings.Join(hosts, ", "))
}
