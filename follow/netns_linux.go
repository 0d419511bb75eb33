//go:build linux

package follow

import "github.com/egresskit/egress/enforce/nft"

// EnforcedNetns is the cookie of the target's network namespace, which
// must belong to the initial user namespace (see enforcedNetns): the name
// check keys its destinations by the same uids.
func EnforcedNetns(t nft.Target) (uint64, error) { return enforcedNetns(t) }
