//go:build linux

package nft

import (
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"

	"github.com/egresskit/egress/enforce/plan"
)

// What the DNS follower changes in a table that follows names: the
// elements of the follow sets, and its cgroup in the gate.

// Followed is an element of a follow set, for Timeout.
type Followed struct {
	plan.Element
	Timeout time.Duration
}

// AddFollowed adds (or refreshes) elements of the follow sets of table in
// one transaction.
func (n *Netlink) AddFollowed(table string, elems []Followed) error {
	var add4, add6 []nftables.SetElement
	for _, e := range elems {
		el := nftables.SetElement{Key: elementKey(e.Element), Timeout: e.Timeout}
		if e.IP.Is4() {
			add4 = append(add4, el)
		} else {
			add6 = append(add6, el)
		}
	}
	return n.batch(func(c *nftables.Conn) error {
		for _, s := range []struct {
			name   string
			family int
			elems  []nftables.SetElement
		}{{plan.SetFollow4, 4, add4}, {plan.SetFollow6, 6, add6}} {
			if len(s.elems) == 0 {
				continue
			}
			set := &nftables.Set{Table: tableOf(table), Name: s.name, KeyType: setKeyType(s.family), Concatenation: true, HasTimeout: true}
			if err := c.SetAddElements(set, s.elems); err != nil {
				return err
			}
		}
		return nil
	})
}

// gateSet is the table's follow_gate set.
func gateSet(table string) *nftables.Set {
	return &nftables.Set{Table: tableOf(table), Name: plan.SetFollowGate, KeyType: nftables.TypeCGroupV2, HasTimeout: true}
}

// OpenGate (re)adds a follower's cgroup to the gate of table for timeout:
// until then the table accepts the follow mark from its sockets.
func (n *Netlink) OpenGate(table string, cgroupID uint64, timeout time.Duration) error {
	return n.batch(func(c *nftables.Conn) error {
		return c.SetAddElements(gateSet(table), []nftables.SetElement{{Key: binaryutil.NativeEndian.PutUint64(cgroupID), Timeout: timeout}})
	})
}

// CloseGate removes a follower's cgroup from the gate of table: the table
// stops accepting the follow mark from its sockets at once.
func (n *Netlink) CloseGate(table string, cgroupID uint64) error {
	return n.batch(func(c *nftables.Conn) error {
		return c.SetDeleteElements(gateSet(table), []nftables.SetElement{{Key: binaryutil.NativeEndian.PutUint64(cgroupID)}})
	})
}
