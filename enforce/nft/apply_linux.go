//go:build linux

package nft

import (
	"fmt"
	"time"

	"github.com/google/nftables"

	"github.com/egresskit/egress/enforce/plan"
)

// Apply replaces our table in the target namespace with the plan, in one
// netlink transaction, then reads it back to verify. The live elements
// of the follow sets are carried over.
//
// Per-service sets get the elements of the services running now, by their
// cgroup ids; the others have none (Plan.Stopped) until Services adds
// them when their cgroup appears.
func (n *Netlink) Apply(p *plan.Plan) (*ApplyResult, error) {
	start := time.Now()
	var ids map[string]uint64
	if p.ByService() {
		cg, err := HostCgroups()
		if err != nil {
			return nil, fmt.Errorf("apply per-service sets: %w", err)
		}
		p, ids = cg.Resolve(p)
	}
	var carry map[string][]nftables.SetElement
	if p.Follow != nil {
		var err error
		if carry, err = n.followedElements(p.Table); err != nil {
			return nil, err
		}
	}
	c, done, err := n.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	if err := queue(c, p, ids, carry); err != nil {
		return nil, fmt.Errorf("build netlink batch: %w", err)
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("apply table inet %s in %s: %w: %w", p.Table, n.t, ErrRejected, err)
	}
	res := &ApplyResult{Took: time.Since(start), Elements: p.Elements(), Rules: len(p.Rules)}
	st, err := n.Status(p.Table, res.Elements <= verifyCountLimit)
	if err != nil {
		return res, fmt.Errorf("verify table inet %s: %w", p.Table, err)
	}
	if err := st.matches(p); err != nil {
		return res, fmt.Errorf("verify table inet %s in %s: %w", p.Table, n.t, err)
	}
	res.Verified = true
	return res, nil
}

// followedElements reads the live elements of the follow sets, with the
// time each has left, so a replace carries them over: followed addresses
// do not vanish because a new generation was applied.
func (n *Netlink) followedElements(table string) (map[string][]nftables.SetElement, error) {
	c, done, err := n.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	tab, err := n.ourTable(c, table)
	if tab == nil || err != nil {
		return nil, err
	}
	out := map[string][]nftables.SetElement{}
	for _, name := range []string{plan.SetFollow4, plan.SetFollow6, plan.SetFollowGate} {
		s, err := c.GetSetByName(tab, name)
		if err != nil {
			continue // the current table follows nothing
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", name, err)
		}
		for _, e := range elems {
			if e.Expires < time.Second {
				continue
			}
			out[name] = append(out[name], nftables.SetElement{Key: e.Key, Timeout: e.Expires})
		}
	}
	return out, nil
}

// Remove deletes our table; it reports whether there was one.
func (n *Netlink) Remove(table string) (bool, error) {
	c, done, err := n.conn()
	if err != nil {
		return false, err
	}
	defer done()
	if tab, err := n.ourTable(c, table); tab == nil || err != nil {
		return false, err
	}
	c.DelTable(tableOf(table))
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("delete table inet %s in %s: %w", table, n.t, err)
	}
	return true, nil
}
