//go:build linux

package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftaSetCount is NFTA_SET_COUNT: the number of elements in a set, which
// the kernel (6.18 here) reports with the set itself, without a dump of
// its elements (a dump of 100,000 takes seconds). x/sys/unix does not
// name it yet; NFTA_SET_TYPE (19) comes before it.
const nftaSetCount = 20

// setCounts reads how many elements each named set of an inet table holds,
// as the kernel counts them. ok is false when the kernel does not report
// counts.
func (n *Netlink) setCounts(table string) (counts map[string]int, ok bool, err error) {
	if n.dial != nil {
		return nil, false, nil
	}
	c, err := n.t.dialNetlink(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, false, fmt.Errorf("open netlink in %s: %w", n.t, err)
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_TABLE, table)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, false, err
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSET),
			Flags: netlink.Request | netlink.Dump},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return nil, false, fmt.Errorf("list sets of table inet %s: %w", table, err)
	}
	counts, ok = map[string]int{}, true
	for _, m := range msgs {
		name, count, has, err := setCount(m.Data)
		if err != nil {
			return nil, false, err
		}
		if name != "" {
			counts[name] = count
			ok = ok && has
		}
	}
	return counts, ok, nil
}

// setCount reads a set's name and element count from a NEWSET message.
func setCount(data []byte) (name string, count int, ok bool, err error) {
	if len(data) < 4 {
		return "", 0, false, fmt.Errorf("a set message of %d bytes", len(data))
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return "", 0, false, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_NAME:
			name = ad.String()
		case nftaSetCount:
			if b := ad.Bytes(); len(b) == 4 {
				count, ok = int(binary.BigEndian.Uint32(b)), true
			}
		}
	}
	return name, count, ok, ad.Err()
}
