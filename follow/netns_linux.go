//go:build linux

package follow

import "github.com/egresskit/egress/enforce/nft"

// EnforcedNetns is the cookie of the target's network namespace, which
// must belong to the initial user namespace (see enforcedNetns): the name
// check keys its destinations by the same uids.
func EnforcedNetns(t nft.Target) (uint64, error) { return enforcedNetns(t) }

// PinDirFor is the follower's pin directory of a namespace and table
// under root (created, on a bpf file system): the name check pins in a
// directory of its own inside.
func PinDirFor(root, table string, netns uint64) (string, error) { return pinDir(root, table, netns) }
