package enforce

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/egresskit/egress/store"
)

// ReadExport reads a file written by "egress-learn export".
func ReadExport(path string) (*store.Export, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read export: %w", err)
	}
	var e store.Export
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("read export %s: not an egress baseline: %w", path, err)
	}
	if e.Format != store.ExportFormat {
		return nil, fmt.Errorf("read export %s: format %q, want %q", path, e.Format, store.ExportFormat)
	}
	if e.Host == "" {
		return nil, fmt.Errorf("read export %s: no host name", path)
	}
	return &e, nil
}

// Merged is a role baseline built from several hosts' exports.
type Merged struct {
	Flows []store.Flow
	// Hosts lists, per flow, the hosts that saw it.
	Hosts map[store.FlowKey][]string
	// Warnings say where the hosts disagree in a way that matters, such as
	// one user name with different UIDs (the rules match UIDs).
	Warnings []string
}

// Merge unites exports: a flow seen by several hosts has their hits added,
// the widest seen interval, the union of names and processes, and the list
// of hosts. Retired flows are left out.
func Merge(exports []*store.Export) *Merged {
	m := &Merged{Hosts: map[store.FlowKey][]string{}}
	by := map[store.FlowKey]*store.Flow{}
	uidOf := map[string]map[uint32][]string{} // user name -> uid -> hosts
	for _, e := range exports {
		for uid, name := range e.Users {
			if uidOf[name] == nil {
				uidOf[name] = map[uint32][]string{}
			}
			uidOf[name][uid] = append(uidOf[name][uid], e.Host)
		}
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
				by[f.FlowKey] = &g
				m.Hosts[f.FlowKey] = []string{e.Host}
				continue
			}
			cur.Hits += f.Hits
			cur.FirstSeen = minTime(cur.FirstSeen, f.FirstSeen)
			if f.LastSeen.After(cur.LastSeen) {
				cur.LastSeen = f.LastSeen
			}
			cur.Hostnames = union(cur.Hostnames, f.Hostnames)
			cur.Processes = union(cur.Processes, f.Processes)
			if !slices.Contains(m.Hosts[f.FlowKey], e.Host) {
				m.Hosts[f.FlowKey] = append(m.Hosts[f.FlowKey], e.Host)
			}
		}
	}
	for _, f := range by {
		m.Flows = append(m.Flows, *f)
	}
	slices.SortFunc(m.Flows, func(a, b store.Flow) int {
		return cmp.Or(cmp.Compare(a.UID, b.UID), a.IP.Compare(b.IP), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
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
		m.Warnings = append(m.Warnings, fmt.Sprintf("user %s has different UIDs (%s): the rules match UIDs, so align them across the fleet", n, strings.Join(parts, "; ")))
	}
	return m
}

func union(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}
