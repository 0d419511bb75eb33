//go:build linux

package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// Service sets hold the cgroup v2 id of each service (the inode of its
// directory), which changes every time the cgroup is created again: the
// ids are looked up when a plan is applied, and Services keeps them
// current afterwards.

// CgroupIDs maps the services of plans to their cgroup ids, under the
// cgroup2 mount.
type CgroupIDs struct {
	Mount string
}

// HostCgroups finds the cgroup2 mount in /proc/mounts.
func HostCgroups() (CgroupIDs, error) {
	m, err := cgroupbpf.Mount()
	return CgroupIDs{Mount: m}, err
}

// ID is the id of a service's cgroup; false when it does not exist (the
// service is not running).
func (c CgroupIDs) ID(service string) (uint64, bool) {
	if plan.ValidServicePath(service) != nil || c.Mount == "" {
		return 0, false
	}
	fi, err := os.Stat(filepath.Join(c.Mount, service))
	if err != nil || !fi.IsDir() {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}

// Root is the cgroup2 mount relative to /sys/fs/cgroup, where nft resolves
// the cgroup paths of a script: "unified" on a hybrid layout. A mount
// elsewhere is an error: nft could not resolve the paths of a script.
func (c CgroupIDs) Root() (string, error) {
	const base = "/sys/fs/cgroup"
	m := filepath.Clean(c.Mount)
	if m == base {
		return "", nil
	}
	if rel, ok := strings.CutPrefix(m, base+"/"); ok && plan.ValidServicePath(rel) == nil {
		return rel, nil
	}
	return "", fmt.Errorf("the cgroup2 mount %s is not below %s, where nft resolves cgroup paths: per-service scripts need it there (apply uses netlink and works anyway)", c.Mount, base)
}

// Resolve is p as the kernel can hold it now: the elements of running
// services, and their ids.
func (c CgroupIDs) Resolve(p *plan.Plan) (*plan.Plan, map[string]uint64) {
	ids := map[string]uint64{}
	if !p.ByService() {
		return p, ids
	}
	q := p.Running(func(s string) bool {
		id, ok := c.ID(s)
		if ok {
			ids[s] = id
		}
		return ok
	})
	return q, ids
}

// serviceKeyType is the key of a service set: cgroup . [uid .] address .
// protocol . port.
func serviceKeyType(family int, withUID bool) nftables.SetDatatype {
	ip := nftables.TypeIPAddr
	if family == 6 {
		ip = nftables.TypeIP6Addr
	}
	if !withUID {
		return nftables.MustConcatSetType(nftables.TypeCGroupV2, ip, nftables.TypeInetProto, nftables.TypeInetService)
	}
	return nftables.MustConcatSetType(nftables.TypeCGroupV2, nftables.TypeUID, ip, nftables.TypeInetProto, nftables.TypeInetService)
}

// serviceElementKey encodes a service element as the kernel stores it:
// the cgroup id (8 bytes, host order), then as elementKey without the uid
// when the element has none.
func serviceElementKey(id uint64, e plan.Element) []byte {
	k := binaryutil.NativeEndian.PutUint64(id)
	rest := elementKey(e)
	if e.AnyUser {
		rest = rest[4:]
	}
	return append(k, rest...)
}

// parseServiceKey undoes serviceElementKey; the service is named by path.
func parseServiceKey(k []byte, family int, path func(uint64) string) (plan.Element, bool) {
	addr := 4
	if family == 6 {
		addr = 16
	}
	var e plan.Element
	switch len(k) {
	case 8 + 4 + addr + 8:
	case 8 + addr + 8:
		e.AnyUser = true
	default:
		return e, false
	}
	e.Service = path(binaryutil.NativeEndian.Uint64(k[:8]))
	k = k[8:]
	if !e.AnyUser {
		e.UID = binaryutil.NativeEndian.Uint32(k[:4])
		k = k[4:]
	}
	if family == 6 {
		e.IP = netip.AddrFrom16([16]byte(k[:16]))
	} else {
		e.IP = netip.AddrFrom4([4]byte(k[:4]))
	}
	k = k[addr:]
	e.Proto = k[0]
	e.Port = binary.BigEndian.Uint16(k[4:6])
	return e, true
}

// serviceSet adds a service set with the elements of running services.
func (en *encoder) serviceSet(s plan.Set) error {
	ns := &nftables.Set{Table: en.t, Name: s.Name, KeyType: serviceKeyType(s.Family, en.p.Match != plan.MatchService),
		Concatenation: true, Comment: s.Comment, Size: uint32(s.Size())}
	elems := make([]nftables.SetElement, 0, len(s.Elements))
	for _, e := range s.Elements {
		id, ok := en.ids[e.Service]
		if !ok {
			return fmt.Errorf("set %s: service %s has no cgroup id", s.Name, e.Service)
		}
		elems = append(elems, nftables.SetElement{Key: serviceElementKey(id, e), Comment: e.Comment})
	}
	return en.addSet(ns, elems, "add elements to")
}

// serviceLookupExprs look the socket's cgroup at the rule's level . [uid
// .] daddr . l4proto . dport up in a service set: each field in
// consecutive registers (the cgroup id takes two).
func (en *encoder) serviceLookupExprs(r *plan.Rule) ([]expr.Any, error) {
	s, err := en.set(r.Set)
	if err != nil {
		return nil, err
	}
	exprs := append(nfproto(r.Family), &expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(r.Level), Register: 1})
	reg := uint32(10) // NFT_REG32_02: after the 8-byte id
	if en.p.Match != plan.MatchService {
		exprs = append(exprs, &expr.Meta{Key: expr.MetaKeySKUID, Register: reg})
		reg++
	}
	addrOff, addrLen, addrRegs := uint32(16), uint32(4), uint32(1)
	if r.Family == 6 {
		addrOff, addrLen, addrRegs = 24, 16, 4
	}
	exprs = append(exprs,
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: addrLen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg + addrRegs},
		&expr.Payload{DestRegister: reg + addrRegs + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
		&expr.Counter{},
		accept(),
	)
	return exprs, nil
}
