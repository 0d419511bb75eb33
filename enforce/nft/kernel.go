// Package nft puts a plan in the kernel's nftables and reads it back, over
// netlink (google/nftables; no nft binary): the atomic replace of our
// table, its status and removal, the follower's set elements and gate, and
// the check that the follow mark is unused. Kernel is the interface
// rollout drives; Netlink is the real kernel, Fake an in-memory one for
// tests.
package nft

import (
	"errors"
	"time"

	"github.com/egresskit/egress/enforce/plan"
)

// Kernel is the nftables of one network namespace, as rollout, restore and
// the rollback guard use it: Netlink is the real one, Fake a stand-in for
// tests.
type Kernel interface {
	// Target is the network namespace.
	Target() Target
	// Apply replaces the plan's table in one transaction and reads it
	// back to verify it. A batch the kernel refused wraps ErrRejected;
	// the previous table is untouched then.
	Apply(p *plan.Plan) (*ApplyResult, error)
	// Remove deletes a table of ours; it reports whether there was one.
	Remove(table string) (removed bool, err error)
	// Status reads a table; with elements, every set element too.
	Status(table string, elements bool) (*Status, error)
}

// ApplyResult says what an apply did.
type ApplyResult struct {
	Elements int           `json:"elements"`
	Rules    int           `json:"rules"`
	Took     time.Duration `json:"took_ns"`
	// Verified: the table, chain, policy, rules and set sizes read back
	// match. Set sizes are counted in the kernel up to 10,000 elements;
	// above, they are the sizes the acknowledged transaction wrote.
	Verified bool `json:"verified"`
}

// ErrRejected wraps a batch the kernel refused; the previous table, if
// any, is untouched.
var ErrRejected = errors.New("the kernel rejected the new table; the previous table (if any) is unchanged")

// verifyCountLimit: up to this many elements, apply counts them in the
// kernel; above it, the acknowledged transaction is trusted for the
// elements and the rest is checked.
const verifyCountLimit = 10000

// Diff compares a plan with its table in the kernel.
func Diff(k Kernel, p *plan.Plan) (*plan.Diff, error) {
	st, err := k.Status(p.Table, true)
	if err != nil {
		return nil, err
	}
	return plan.Compare(st.Installed(), p), nil
}
