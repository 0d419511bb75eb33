// Package enforce is the family of packages that turn a learned baseline
// into our nftables table, in the order the data flows:
//
//	baseline  which flows a table is built from: the approved ones, a
//	          fleet's merged exports, a reconcile proposal
//	options   the configuration as plan options (resolv.conf, always_allow,
//	          name rules)
//	plan      the table as a pure value: Build, the nft text, the diff,
//	          the pre-apply check (no kernel, builds for any OS)
//	nft       the plan in the kernel over netlink: apply, status, remove,
//	          the follow sets; Kernel is its interface, Fake a stand-in
//	rollout   generations: apply, confirm, rollback, remove, restore, the
//	          rollback guard and its lock, the files beside the store
//
// The monitor (package monitor) and the DNS follower (package follow) work
// beside a table once it is in.
package enforce
