// Package nft puts a plan in the kernel's nftables and reads it back, over
// netlink (google/nftables; no nft binary): the atomic replace of our
// table, its status and removal, the follower's set elements and gate, and
// the check that the follow mark is unused. Kernel is the interface
// rollout drives; Netlink is the real kernel, Fake an in-memory one for
// tests.
package nft

import (
	"errors"
	"strconv"
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
	// the previous table is untouched then. It is ApplyWith without
	// options.
	Apply(p *plan.Plan) (*ApplyResult, error)
	// ApplyWith is Apply that stamps the table with o.Generation and,
	// with o.From, changes the table instead of replacing it when the
	// kernel holds the table of o.From (a delta: one transaction too);
	// when it does not, or when no delta takes one table to the other, it
	// replaces the table and ApplyResult.FullReason says why.
	ApplyWith(p *plan.Plan, o ApplyOptions) (*ApplyResult, error)
	// Remove deletes a table of ours; it reports whether there was one.
	Remove(table string) (removed bool, err error)
	// Status reads a table; with elements, every set element too.
	Status(table string, elements bool) (*Status, error)
}

// ApplyOptions say how to apply a plan.
type ApplyOptions struct {
	// Generation is the generation whose plan it is, stamped on the table
	// (0: not known).
	Generation uint64
	// From indexes the plan the kernel should hold, stamped with
	// generation FromGeneration: when the table in the kernel is that
	// one, only the difference goes in.
	From           *plan.Index
	FromGeneration uint64
	// Delta, when set, is plan.NewDelta(From, p), already made.
	Delta *plan.Delta
}

// delta is the delta o asks for, made when o does not hold it.
func (o ApplyOptions) delta(p *plan.Plan) (*plan.Delta, string) {
	d := o.Delta
	if d == nil {
		var err error
		if d, err = plan.NewDelta(o.From, p); err != nil {
			return nil, err.Error()
		}
	}
	return d, tooLarge(d, p)
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
	// Delta says what a delta apply changed; nil for a full replace.
	Delta *DeltaResult `json:"delta,omitempty"`
	// FullReason says why a delta was asked for and the table was
	// replaced instead.
	FullReason string `json:"full_reason,omitempty"`
	// KernelDiffers: the table in the kernel was not the one the store
	// says it is (changed by hand, replaced, another generation), so the
	// whole table was replaced (FullReason says how it differed).
	KernelDiffers bool `json:"kernel_differs,omitempty"`
}

// DeltaResult is what a delta apply changed.
type DeltaResult struct {
	From            uint64 `json:"from_generation"`
	ElementsAdded   int    `json:"elements_added"`
	ElementsRemoved int    `json:"elements_removed"`
	// ElementsChanged were removed and added again: their comment
	// changed (they count in both).
	ElementsChanged int    `json:"elements_changed"`
	RulesAdded      int    `json:"rules_added"`
	RulesRemoved    int    `json:"rules_removed"`
	Policy          string `json:"policy,omitempty"` // the chain's new policy, when it changed
}

// deltaResult sums up delta d of a plan of toRules rules.
func deltaResult(d *plan.Delta, from uint64, toRules int) *DeltaResult {
	del, add := d.Elements()
	rdel, radd := d.RulesChanged(toRules)
	return &DeltaResult{From: from, ElementsAdded: add, ElementsRemoved: del, ElementsChanged: d.Changed,
		RulesAdded: radd, RulesRemoved: rdel, Policy: d.Policy}
}

// maxDeltaShare: a delta that deletes and adds more than this share of the
// new plan's elements is not quicker than a replace, which is done
// instead.
const maxDeltaShare = 0.5

// tooLarge says why a delta is not worth it ("": it is).
func tooLarge(d *plan.Delta, p *plan.Plan) string {
	del, add := d.Elements()
	if n := p.Elements(); del+add > 1000 && float64(del+add) > maxDeltaShare*float64(n) {
		return "the change (" + itoa(add) + " elements added, " + itoa(del) + " removed) is as large as a replace"
	}
	return ""
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

func itoa(n int) string { return strconv.Itoa(n) }

func itoa64(n uint64) string { return strconv.FormatUint(n, 10) }
