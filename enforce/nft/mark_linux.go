//go:build linux

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egresskit/egress/enforce/plan"
)

// ErrMarkInUse marks a follow mark bit that other software of the
// namespace also uses.
var ErrMarkInUse = errors.New("the follow mark bit is used by other rules of this network namespace")

// CheckMarkUnused checks that nothing else in the target namespace uses
// the follow mark bit: no rule of another nftables table (iptables-nft
// included) that matches or sets the packet mark without masking the bit
// out, and no routing rule whose fwmark mask covers it. The follower drops
// every packet with the bit that it did not mark itself, so software that
// sets the bit would lose its packets, and rules that match the whole mark
// would see ours. iptables-legacy rules are not seen.
func (n *Netlink) CheckMarkUnused(table string, mark uint32) error {
	t := n.t
	c, done, err := n.conn()
	if err != nil {
		return err
	}
	defer done()
	tables, err := c.ListTables()
	if err != nil {
		return fmt.Errorf("list tables in %s: %w", t, err)
	}
	var uses []string
	for _, tab := range tables {
		if tab.Name == table && tab.Family == nftables.TableFamilyINet {
			continue
		}
		chains, err := c.ListChainsOfTableFamily(tab.Family)
		if err != nil {
			return fmt.Errorf("list chains in %s: %w", t, err)
		}
		for _, ch := range chains {
			if ch.Table.Name != tab.Name {
				continue
			}
			rules, err := c.GetRules(tab, ch)
			if err != nil {
				return fmt.Errorf("list rules of %s %s: %w", tab.Name, ch.Name, err)
			}
			for _, r := range rules {
				if why := markUse(r.Exprs, mark); why != "" {
					uses = append(uses, fmt.Sprintf("table %s %s chain %s (rule handle %d) %s", familyName(tab.Family), tab.Name, ch.Name, r.Handle, why))
				}
			}
		}
	}
	fw, err := fwmarkRules(t, mark)
	if err != nil {
		return err
	}
	uses = append(uses, fw...)
	if len(uses) > 0 {
		return fmt.Errorf("%w (%s): mark 0x%08x: %s; choose another follow_mark bit", ErrMarkInUse, t, mark, strings.Join(uses, "; "))
	}
	return nil
}

// CheckPlanMark checks, for a plan that follows names, that its follow
// mark is unused in the target namespace (CheckMarkUnused).
func (n *Netlink) CheckPlanMark(p *plan.Plan) error {
	if p.Follow == nil {
		return nil
	}
	return n.CheckMarkUnused(p.Table, p.Follow.Mark)
}

// markUse says how a rule's expressions use the mark bit, or "" when they
// leave it alone. A load of the mark passes when its mask leaves the bit
// out, or when it is compared with a value that is neither zero nor holds
// the bit (the bit changes nothing then but for packets that carry that
// very value too); a write must keep the bit as it was.
func markUse(exprs []expr.Any, bit uint32) string {
	for i, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.Key != expr.MetaKeyMARK {
				continue
			}
			if e.SourceRegister {
				if !keptBefore(exprs, i, e.Register, bit) {
					return "sets the mark"
				}
				continue
			}
			if !loadAffected(exprs, i, bit) {
				continue
			}
			return "matches the mark"
		case *expr.Match:
			if strings.EqualFold(e.Name, "mark") || strings.EqualFold(e.Name, "connmark") {
				return "matches the mark (xtables " + e.Name + ")"
			}
		case *expr.Target:
			if strings.EqualFold(e.Name, "mark") || strings.EqualFold(e.Name, "connmark") {
				return "sets the mark (xtables " + e.Name + ")"
			}
		}
	}
	return ""
}

// loadAffected says whether the mark loaded at i is used in a way the bit
// changes.
func loadAffected(exprs []expr.Any, i int, bit uint32) bool {
	mask, j := uint32(0xffffffff), i+1
	if bw, ok := exprAt[*expr.Bitwise](exprs, j); ok && len(bw.Mask) == 4 && len(bw.Xor) == 4 {
		mask = binaryutil.NativeEndian.Uint32(bw.Mask)
		xor := binaryutil.NativeEndian.Uint32(bw.Xor)
		if mask&bit == 0 || xor&bit == 0 && writesMark(exprs, j+1, bw.DestRegister) {
			return false // the bit is masked out, or kept (meta mark set meta mark | x)
		}
		j++
	}
	if cmp, ok := exprAt[*expr.Cmp](exprs, j); ok && len(cmp.Data) == 4 {
		v := binaryutil.NativeEndian.Uint32(cmp.Data) & mask
		return v == 0 || v&bit != 0
	}
	return true
}

// keptBefore: the write at i takes its value from a load of the mark
// whose bitwise keeps bit and does not set it (meta mark set meta mark | x).
func keptBefore(exprs []expr.Any, i int, reg uint32, bit uint32) bool {
	if i < 2 {
		return false
	}
	load, ok1 := exprs[i-2].(*expr.Meta)
	bw, ok2 := exprs[i-1].(*expr.Bitwise)
	if !ok1 || !ok2 || load.Key != expr.MetaKeyMARK || load.SourceRegister || bw.DestRegister != reg || len(bw.Mask) != 4 {
		return false
	}
	return binaryutil.NativeEndian.Uint32(bw.Mask)&bit != 0 && binaryutil.NativeEndian.Uint32(bw.Xor)&bit == 0
}

func writesMark(exprs []expr.Any, i int, reg uint32) bool {
	if i >= len(exprs) {
		return false
	}
	m, ok := exprs[i].(*expr.Meta)
	return ok && m.Key == expr.MetaKeyMARK && m.SourceRegister && m.Register == reg
}

func exprAt[T any](exprs []expr.Any, i int) (T, bool) {
	var zero T
	if i >= len(exprs) {
		return zero, false
	}
	v, ok := exprs[i].(T)
	return v, ok
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprint(f)
}

// fwmarkRules lists the routing rules of the target whose fwmark mask
// covers bit.
func fwmarkRules(t Target, bit uint32) ([]string, error) {
	conn, err := t.dialNetlink(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("list routing rules in %s: %w", t, err)
	}
	defer conn.Close()
	var uses []string
	for _, family := range []byte{unix.AF_INET, unix.AF_INET6} {
		hdr := make([]byte, 12) // struct fib_rule_hdr
		hdr[0] = family
		msgs, err := conn.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETRULE, Flags: netlink.Request | netlink.Dump}, Data: hdr})
		if err != nil {
			return nil, fmt.Errorf("list routing rules in %s: %w", t, err)
		}
		for _, m := range msgs {
			if len(m.Data) < 12 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[12:])
			if err != nil {
				continue
			}
			var mark, mask uint32 = 0, 0xffffffff
			has := false
			for ad.Next() {
				switch ad.Type() {
				case unix.FRA_FWMARK:
					mark, has = binary.NativeEndian.Uint32(ad.Bytes()), true
				case unix.FRA_FWMASK:
					mask = binary.NativeEndian.Uint32(ad.Bytes())
				}
			}
			// A rule for a mark with the bit, or for unmarked packets,
			// routes followed packets otherwise than their process meant.
			if has && mask&bit != 0 && (mark&mask == 0 || mark&bit != 0) {
				uses = append(uses, fmt.Sprintf("routing rule fwmark 0x%x/0x%x", mark, mask))
			}
		}
	}
	return uses, nil
}
