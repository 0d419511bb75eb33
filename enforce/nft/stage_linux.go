//go:build linux

package nft

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/egresskit/egress/enforce/plan"
)

// serviceStageSets add the sets of staged enforcement by service: the
// cgroup ids of the running staged services.
func (en *encoder) serviceStageSets() error {
	for _, s := range en.p.ServiceSets {
		ns := &nftables.Set{Table: en.t, Name: s.Name, KeyType: nftables.TypeCGroupV2, KeyByteOrder: binaryutil.NativeEndian}
		elems := make([]nftables.SetElement, 0, len(s.Services))
		for _, svc := range s.Services {
			id, ok := en.ids[svc]
			if !ok {
				return fmt.Errorf("set %s: service %s has no cgroup id", s.Name, svc)
			}
			elems = append(elems, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint64(id)})
		}
		if err := en.c.AddSet(ns, elems); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		en.sets[s.Name] = ns
	}
	return nil
}

// who matches what a default rule is for: the socket's owner in a set of
// users, or its cgroup at the rule's level in a set of services; nothing
// for everyone.
func (en *encoder) who(r *plan.Rule) ([]expr.Any, error) {
	if !plan.IsServiceStageSet(r.Set) {
		return en.users(r.Set)
	}
	s, ok := en.sets[r.Set]
	if !ok {
		return nil, fmt.Errorf("rule matches missing set %s", r.Set)
	}
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(r.Level), Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}, nil
}
