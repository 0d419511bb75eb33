//go:build linux

package nft

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// Status reads our table from the target namespace. A missing table is
// not an error: Present is false. With elements, every set element is
// read (diff needs them; the kernel's dump of a 100,000-element set takes
// seconds); without, a set's number of elements is the one the table's
// stamp gives (the chain is read first, for its stamp).
func (n *Netlink) Status(table string, elements bool) (*Status, error) {
	return n.read(table, func(st *Status, c *nftables.Conn, tab *nftables.Table) error {
		if err := st.readOutput(c, tab); err != nil {
			return err
		}
		return st.readSets(c, tab, elements)
	})
}

// Counters reads only the output chain of our table: its rules, their
// counters and the mode; not the sets (Sets stays empty). It is cheap
// whatever the size of the sets.
func (n *Netlink) Counters(table string) (*Status, error) {
	return n.read(table, func(st *Status, c *nftables.Conn, tab *nftables.Table) error { return st.readOutput(c, tab) })
}

// read reads our table with fn; a missing table is not an error.
func (n *Netlink) read(table string, fn func(*Status, *nftables.Conn, *nftables.Table) error) (*Status, error) {
	st := &Status{Target: n.t.String(), Table: table, elements: map[string][]plan.Element{}}
	c, done, err := n.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	tab, err := n.ourTable(c, table)
	if err != nil {
		return nil, err
	}
	if tab == nil {
		return st, nil
	}
	st.Present = true
	if err := fn(st, c, tab); err != nil {
		return nil, err
	}
	return st, nil
}

// readOutput reads our output chain.
func (st *Status) readOutput(c *nftables.Conn, tab *nftables.Table) error {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != tab.Name || ch.Name != "output" {
			continue
		}
		if err := st.readChain(c, tab, ch); err != nil {
			return err
		}
	}
	return nil
}

// readSets reads the sizes (or the elements) of our sets, and the users
// of staged enforcement.
func (st *Status) readSets(c *nftables.Conn, tab *nftables.Table, elements bool) error {
	sets, err := c.GetSets(tab)
	if err != nil {
		return fmt.Errorf("list sets of table inet %s: %w", tab.Name, err)
	}
	for _, s := range sets {
		switch {
		case s.Anonymous:
		case s.Name == plan.SetEnforceUsers || s.Name == plan.SetAuditUsers:
			err = st.readUsers(c, s)
		case plan.IsServiceStageSet(s.Name):
			err = st.readStagedServices(c, s)
		case plan.IsServiceSet(s.Name):
			// Always read: status names the services that have elements.
			err = st.readElements(c, s)
		case !elements && st.stamp != nil && !s.HasTimeout && hasKey(st.stamp.Elements, s.Name):
			st.Sets = append(st.Sets, SetStatus{Name: s.Name, Elements: st.stamp.Elements[s.Name]})
		case !elements && s.Size > 0 && !s.HasTimeout:
			// Earlier versions sized each set to exactly its elements; nft -f
			// of a plan's script gives it room to grow (plan.SetSize).
			st.Sets = append(st.Sets, SetStatus{Name: s.Name, Elements: int(s.Size), SizeOnly: st.stamp == nil})
		default:
			err = st.readElements(c, s)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// setKeys reads the keys of set s that are size bytes long, decoded and
// sorted (nil when there are none).
func setKeys[T cmp.Ordered](c *nftables.Conn, s *nftables.Set, size int, decode func([]byte) T) ([]T, error) {
	elems, err := c.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
	}
	var keys []T
	for _, e := range elems {
		if len(e.Key) == size {
			keys = append(keys, decode(e.Key))
		}
	}
	slices.Sort(keys)
	return keys, nil
}

func (st *Status) readUsers(c *nftables.Conn, s *nftables.Set) error {
	uids, err := setKeys(c, s, 4, binaryutil.NativeEndian.Uint32)
	if err != nil {
		return err
	}
	if s.Name == plan.SetEnforceUsers {
		st.EnforceUIDs = uids
	} else {
		st.AuditUIDs = uids
	}
	return nil
}

func (st *Status) readElements(c *nftables.Conn, s *nftables.Set) error {
	elems, err := c.GetSetElements(s)
	if err != nil {
		return fmt.Errorf("list elements of set %s: %w", s.Name, err)
	}
	st.Sets = append(st.Sets, SetStatus{Name: s.Name, Elements: len(elems), Counted: true})
	if plan.IsServiceSet(s.Name) {
		st.readServiceElements(s.Name, elems)
		return nil
	}
	for _, el := range elems {
		if e, ok := parseElementKey(el.Key); ok {
			e.Comment = el.Comment
			st.elements[s.Name] = append(st.elements[s.Name], e)
		}
	}
	return nil
}

// readChain reads the output chain: its policy, its rules' comments and
// counters, and the mode its default rules make.
func (st *Status) readChain(c *nftables.Conn, tab *nftables.Table, ch *nftables.Chain) error {
	st.Policy = "accept"
	if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
		st.Policy = "drop"
	}
	rules, err := c.GetRules(tab, ch)
	if err != nil {
		return fmt.Errorf("list rules of chain output: %w", err)
	}
	if len(rules) > 0 {
		stamp, ok, err := parseStamp(rules[0].UserData)
		if err != nil {
			return err
		}
		if ok {
			st.stamp, st.Generation = &stamp, stamp.Generation
		}
	}
	var drops, audits int
	for _, r := range rules {
		cmt, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		st.Rules = append(st.Rules, cmt)
		c := ruleCounters(r.Exprs)
		st.countRule(cmt, c)
		switch {
		case c.cnt == nil:
		case c.prefix == plan.PrefixDrop:
			drops++
		case c.prefix == plan.PrefixAudit:
			audits++
		}
	}
	st.Mode = modeOf(drops, audits)
	return nil
}

// ruleCounters finds a rule's counter, a second one after a limit (the
// packets logged), its limit's rate and its log's prefix and group.
func ruleCounters(exprs []expr.Any) ruleCount {
	var c ruleCount
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Counter:
			if c.cnt == nil {
				c.cnt = &Counter{Packets: e.Packets, Bytes: e.Bytes}
			} else {
				c.logged = &Counter{Packets: e.Packets, Bytes: e.Bytes}
			}
		case *expr.Limit:
			c.limited, c.rate = true, e.Rate
		case *expr.Log:
			c.prefix, c.group = string(e.Data), e.Group
		}
	}
	return c
}

// readServiceElements reads a service set's elements, each service named
// by its cgroup path ("cgroup-id:N" for an id no cgroup has any more).
func (st *Status) readServiceElements(name string, elems []nftables.SetElement) {
	path := cgroupPath()
	family := 4
	if name == plan.SetService6 {
		family = 6
	}
	for _, el := range elems {
		if e, ok := parseServiceKey(el.Key, family, path); ok {
			e.Comment = el.Comment
			st.elements[name] = append(st.elements[name], e)
			st.countService(e.Service)
		}
	}
}

// cgroupPath names a cgroup id by its path under the cgroup2 mount
// ("cgroup-id:N" for an id no cgroup has).
func cgroupPath() func(uint64) string {
	path := func(id uint64) string { return fmt.Sprintf("cgroup-id:%d", id) }
	if mount, err := cgroupbpf.Mount(); err == nil {
		names := cgroupbpf.NewNames(mount)
		path = func(id uint64) string { return strings.TrimPrefix(names.Name(id), "/") }
	}
	return path
}

// readStagedServices reads a set of staged enforcement by service.
func (st *Status) readStagedServices(c *nftables.Conn, s *nftables.Set) error {
	path := cgroupPath()
	svcs, err := setKeys(c, s, 8, func(k []byte) string { return path(binaryutil.NativeEndian.Uint64(k)) })
	if err != nil {
		return err
	}
	if svcs == nil {
		svcs = []string{} // an empty set still says which kind the table stages
	}
	if s.Name == plan.SetEnforceServices {
		st.EnforceServices = svcs
	} else {
		st.AuditServices = svcs
	}
	return nil
}

// countService counts one element of a service in Services.
func (st *Status) countService(svc string) {
	i := slices.IndexFunc(st.Services, func(s ServiceStatus) bool { return s.Service == svc })
	if i < 0 {
		i = len(st.Services)
		st.Services = append(st.Services, ServiceStatus{Service: svc})
	}
	st.Services[i].Elements++
	slices.SortFunc(st.Services, func(a, b ServiceStatus) int { return strings.Compare(a.Service, b.Service) })
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}
