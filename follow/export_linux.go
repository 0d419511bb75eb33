//go:build linux

package follow

import "github.com/egresskit/egress/enforce/nft"

// EnforcedNetns returns the cookie of the target's network namespace, as
// bpf_get_netns_cookie gives it for its sockets; it refuses a namespace
// owned by another user namespace than the initial one (its sockets' uids
// are not the host's). Other programs of the table (the DNS policy) use it.
func EnforcedNetns(t nft.Target) (uint64, error) { return enforcedNetns(t) }

// PinDir makes (when missing) and returns the table's own directory under
// root, which must be on a bpf file system: the follower's pins and the
// DNS policy's live there.
func PinDir(root, table string, netns uint64) (string, error) { return pinDir(root, table, netns) }
