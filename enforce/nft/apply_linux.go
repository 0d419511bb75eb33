//go:build linux

package nft

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/phase"
)

// Apply replaces our table in the target namespace with the plan, in one
// netlink transaction, then reads it back to verify. The live elements
// of the follow sets are carried over.
//
// Per-service sets get the elements of the services running now, by their
// cgroup ids; the others have none (Plan.Stopped) until Services adds
// them when their cgroup appears.
func (n *Netlink) Apply(p *plan.Plan) (*ApplyResult, error) {
	return n.ApplyWith(p, ApplyOptions{})
}

// ApplyWith applies p as generation o.Generation: with o.From, as a delta
// when the kernel holds o.From's table (see Kernel), else as a replace.
func (n *Netlink) ApplyWith(p *plan.Plan, o ApplyOptions) (*ApplyResult, error) {
	start := time.Now()
	reason, differs := "", false
	if o.From != nil {
		if d, why := o.delta(p); why != "" {
			reason = why
		} else {
			res, why, err := n.applyDelta(p, o, d, start)
			if why == "" {
				return res, err
			}
			reason, differs = why, true
		}
	}
	res, err := n.replace(p, o, start)
	if res != nil {
		res.FullReason, res.KernelDiffers = reason, differs
	}
	return res, err
}

// replace replaces the table: add table, delete it, add it with its
// contents, in one transaction; the follow sets keep their live elements.
func (n *Netlink) replace(p *plan.Plan, o ApplyOptions, start time.Time) (*ApplyResult, error) {
	var ids map[string]uint64
	if p.ByService() {
		cg, err := HostCgroups()
		if err != nil {
			return nil, fmt.Errorf("apply per-service sets: %w", err)
		}
		p, ids = cg.Resolve(p)
	}
	var carry map[string][]nftables.SetElement
	if p.Follow != nil {
		var err error
		if carry, err = n.followedElements(p.Table); err != nil {
			return nil, err
		}
	}
	if err := n.sendTable(p, ids, carry, stampOf(p, o.Generation)); err != nil {
		return nil, err
	}
	res := &ApplyResult{Took: time.Since(start), Elements: p.Elements(), Rules: len(p.Rules)}
	return res, n.verify(p, o.Generation, res)
}

// sendTable sends the whole table in one transaction: written by hand
// (batchWriter) on a kernel, through google/nftables on a test dial.
func (n *Netlink) sendTable(p *plan.Plan, ids map[string]uint64, carry map[string][]nftables.SetElement, stamp Stamp) error {
	if n.dial == nil && !n.viaLibrary {
		w := newBatchWriter()
		defer w.release()
		if err := queueBatch(w, p, ids, carry, stamp); err != nil {
			return fmt.Errorf("build netlink batch: %w", err)
		}
		if err := w.send(n.t); errors.Is(err, errAnswersLost) {
			return fmt.Errorf("apply table inet %s in %s: %w", p.Table, n.t, err)
		} else if err != nil {
			return fmt.Errorf("apply table inet %s in %s: %w: %w", p.Table, n.t, ErrRejected, err)
		}
		return nil
	}
	c, done, err := n.conn()
	if err != nil {
		return err
	}
	defer done()
	if err := queue(c, p, ids, carry, stamp); err != nil {
		return fmt.Errorf("build netlink batch: %w", err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply table inet %s in %s: %w: %w", p.Table, n.t, ErrRejected, err)
	}
	return nil
}

// verify reads the table back and checks it against the plan and the
// stamp of generation gen.
func (n *Netlink) verify(p *plan.Plan, gen uint64, res *ApplyResult) error {
	st, err := n.Status(p.Table, res.Elements <= verifyCountLimit)
	if err != nil {
		return fmt.Errorf("verify table inet %s: %w", p.Table, err)
	}
	if err := st.matches(p); err != nil {
		return fmt.Errorf("verify table inet %s in %s: %w", p.Table, n.t, err)
	}
	if st.stamp == nil || st.stamp.Generation != gen {
		return fmt.Errorf("verify table inet %s in %s: the table is not stamped generation %d", p.Table, n.t, gen)
	}
	res.Verified = true
	return nil
}

// applyDelta changes the table from o.From's to p's with delta d when the
// kernel holds o.From's. why says how the kernel's table is not o.From's
// (the caller replaces the table); "" when it applied (err: the read-back
// failed).
func (n *Netlink) applyDelta(p *plan.Plan, o ApplyOptions, d *plan.Delta, start time.Time) (res *ApplyResult, why string, err error) {
	c, done, err := n.conn()
	if err != nil {
		return nil, "", err
	}
	defer done()
	k, why, err := n.kernelTable(c, o)
	phase.Mark("kernel: table checked")
	if why != "" || err != nil {
		return nil, why, err
	}
	en := &encoder{c: c, p: p, t: k.table, sets: k.sets, stamp: stampOf(p, o.Generation)}
	if err := en.delta(d, k); err != nil {
		return nil, "", fmt.Errorf("build netlink batch: %w", err)
	}
	phase.Mark("kernel: delta encoded")
	if err := c.Flush(); err != nil {
		// Nothing changed: the kernel's table is not quite the one the
		// store says (an element missing or there already).
		return nil, "the kernel refused the changes (its table is not generation " + itoa64(o.FromGeneration) + "'s): " + err.Error(), nil
	}
	res = &ApplyResult{Took: time.Since(start), Elements: p.Elements(), Rules: len(p.Rules),
		Delta: deltaResult(d, o.FromGeneration, len(p.Rules))}
	phase.Mark("kernel: delta flushed")
	return res, "", n.verify(p, o.Generation, res)
}

// kernelState is our table as a delta finds it.
type kernelState struct {
	table *nftables.Table
	chain *nftables.Chain
	rules []*nftables.Rule
	sets  map[string]*nftables.Set
}

// kernelTable reads our table and checks that it is o.From's, stamped
// o.FromGeneration: why says how it is not.
func (n *Netlink) kernelTable(c *nftables.Conn, o ApplyOptions) (k kernelState, why string, err error) {
	from := o.From.Head
	if k.table, err = n.ourTable(c, from.Table); err != nil || k.table == nil {
		return k, "table inet " + from.Table + " is not in the kernel", err
	}
	if k.chain, err = c.ListChain(k.table, from.Chain.Name); err != nil {
		return k, "its chain " + from.Chain.Name + " is missing", nil
	}
	if k.rules, err = c.GetRules(k.table, k.chain); err != nil {
		return k, "", fmt.Errorf("list rules of chain %s: %w", from.Chain.Name, err)
	}
	if why := stampedAs(k.rules, o); why != "" {
		return k, why, nil
	}
	if why := rulesAs(k, from); why != "" {
		return k, why, nil
	}
	sets, err := c.GetSets(k.table)
	if err != nil {
		return k, "", fmt.Errorf("list sets of table inet %s: %w", from.Table, err)
	}
	k.sets = map[string]*nftables.Set{}
	for _, s := range sets {
		if !s.Anonymous {
			k.sets[s.Name] = s
		}
	}
	if why := setsAs(k.sets, o.From); why != "" {
		return k, why, nil
	}
	return k, n.countsAs(from.Table, o), nil
}

// countsAs says how the kernel's count of the elements of each set is
// not the plan's ("": it is): an element added or deleted by hand.
func (n *Netlink) countsAs(table string, o ApplyOptions) string {
	from := o.From
	counts, ok, err := n.setCounts(table)
	switch {
	case err != nil:
		return "its sets' sizes could not be read: " + err.Error()
	case !ok:
		return "the kernel does not report how many elements a set holds"
	}
	for i, s := range from.Head.Sets {
		if counts[s.Name] != len(from.Sets[i]) {
			return "its set " + s.Name + " holds " + itoa(counts[s.Name]) + " elements, generation " + itoa64(o.FromGeneration) + " has " + itoa(len(from.Sets[i])) +
				" (changed outside egress-enforce)"
		}
	}
	return ""
}

// stampedAs says how the first rule's stamp is not o.FromGeneration's
// with the sizes of o.From ("": it is).
func stampedAs(rules []*nftables.Rule, o ApplyOptions) string {
	if len(rules) == 0 {
		return "its chain has no rule"
	}
	st, ok, err := parseStamp(rules[0].UserData)
	switch {
	case err != nil:
		return err.Error()
	case !ok:
		return "the table carries no generation stamp (applied by nft -f, or by an earlier version)"
	case st.Generation != o.FromGeneration:
		return "the table in the kernel is generation " + itoa64(st.Generation) + ", the store says " + itoa64(o.FromGeneration)
	}
	for i, s := range o.From.Head.Sets {
		if n, ok := st.Elements[s.Name]; !ok || n != len(o.From.Sets[i]) {
			return "set " + s.Name + " holds " + itoa(n) + " elements by its stamp, generation " + itoa64(o.FromGeneration) + " has " + itoa(len(o.From.Sets[i]))
		}
	}
	return ""
}

// rulesAs says how the chain's rules and policy are not those of plan
// from ("": they are).
func rulesAs(k kernelState, from *plan.Plan) string {
	policy := "accept"
	if k.chain.Policy != nil && *k.chain.Policy == nftables.ChainPolicyDrop {
		policy = "drop"
	}
	if policy != from.Chain.Policy {
		return "its chain's policy is " + policy + ", not " + from.Chain.Policy
	}
	if len(k.rules) != len(from.Rules) {
		return "its chain has " + itoa(len(k.rules)) + " rules, not " + itoa(len(from.Rules))
	}
	for i, r := range k.rules {
		want := &from.Rules[i]
		if c := ruleComment(r); c != want.Comment {
			return "its rule " + itoa(i+1) + " is " + quoteText(c) + ", not " + quoteText(want.Comment)
		}
		if tag, _ := userdata.GetString(r.UserData, ruleTagType); tag != ruleTag(want.Comment, want.Text) {
			return "its rule " + itoa(i+1) + " (" + quoteText(want.Comment) + ") was changed since it was applied"
		}
	}
	return ""
}

// setsAs says how the kernel's sets are not declared as the plan's
// ("": they are).
func setsAs(sets map[string]*nftables.Set, from *plan.Index) string {
	for _, s := range from.Head.Sets {
		k, ok := sets[s.Name]
		if !ok {
			return "its set " + s.Name + " is missing"
		}
		if int(k.Size) != s.Size() || k.HasTimeout || !k.Concatenation {
			return "its set " + s.Name + " is declared otherwise (size " + itoa(int(k.Size)) + ", not " + itoa(s.Size()) + ")"
		}
	}
	for _, name := range []string{plan.SetFollow4, plan.SetFollow6, plan.SetFollowGate} {
		if _, ok := sets[name]; ok != (from.Head.Follow != nil) {
			return "its follow sets are not the store's generation's (names followed or not)"
		}
	}
	return ""
}

// delta queues delta d on the table k holds: the policy, the elements
// deleted then added, the rules between the kept head and tail, and the
// stamp on the first rule.
func (en *encoder) delta(d *plan.Delta, k kernelState) error {
	ch := k.chain
	if d.Policy != "" {
		ch = en.c.AddChain(en.outputChain())
	}
	for _, s := range en.p.Sets {
		set, ok := en.sets[s.Name]
		if !ok {
			return fmt.Errorf("set %s is missing", s.Name)
		}
		if err := en.elements(set, d.Del[s.Name], en.c.SetDeleteElements); err != nil {
			return err
		}
		if err := en.elements(set, d.Add[s.Name], en.c.SetAddElements); err != nil {
			return err
		}
	}
	return en.deltaRules(d, k, ch)
}

// elements queues an element operation in chunks the kernel takes.
func (en *encoder) elements(s *nftables.Set, elems []plan.Element, op func(*nftables.Set, []nftables.SetElement) error) error {
	list := make([]nftables.SetElement, len(elems))
	for i, e := range elems {
		list[i] = nftables.SetElement{Key: elementKey(e), Comment: e.Comment}
	}
	for _, ch := range chunks(list) {
		if err := op(s, ch); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	return nil
}

// deltaRules deletes the old rules between the kept head and tail, inserts
// the new ones in their place, and stamps the first rule (replaced in
// place when it is kept).
func (en *encoder) deltaRules(d *plan.Delta, k kernelState, ch *nftables.Chain) error {
	for _, r := range k.rules[d.Head : len(k.rules)-d.Tail] {
		if err := en.c.DelRule(r); err != nil {
			return err
		}
	}
	var before uint64 // insert before the first kept tail rule; append when none
	if d.Tail > 0 {
		before = k.rules[len(k.rules)-d.Tail].Handle
	}
	for i := d.Head; i < len(en.p.Rules)-d.Tail; i++ {
		r, err := en.rule(ch, i)
		if err != nil {
			return err
		}
		if before != 0 {
			r.Position = before
			en.c.InsertRule(r)
		} else {
			en.c.AddRule(r)
		}
	}
	if d.Head > 0 {
		r, err := en.rule(ch, 0)
		if err != nil {
			return err
		}
		r.Handle = k.rules[0].Handle
		en.c.ReplaceRule(r)
	}
	return nil
}

// followedElements reads the live elements of the follow sets, with the
// time each has left, so a replace carries them over: followed addresses
// do not vanish because a new generation was applied.
func (n *Netlink) followedElements(table string) (map[string][]nftables.SetElement, error) {
	c, done, err := n.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	tab, err := n.ourTable(c, table)
	if tab == nil || err != nil {
		return nil, err
	}
	out := map[string][]nftables.SetElement{}
	for _, name := range []string{plan.SetFollow4, plan.SetFollow6, plan.SetFollowGate} {
		s, err := c.GetSetByName(tab, name)
		if err != nil {
			continue // the current table follows nothing
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", name, err)
		}
		for _, e := range elems {
			if e.Expires < time.Second {
				continue
			}
			out[name] = append(out[name], nftables.SetElement{Key: e.Key, Timeout: e.Expires})
		}
	}
	return out, nil
}

// Remove deletes our table; it reports whether there was one.
func (n *Netlink) Remove(table string) (bool, error) {
	c, done, err := n.conn()
	if err != nil {
		return false, err
	}
	defer done()
	if tab, err := n.ourTable(c, table); tab == nil || err != nil {
		return false, err
	}
	c.DelTable(tableOf(table))
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("delete table inet %s in %s: %w", table, n.t, err)
	}
	return true, nil
}

// ruleComment is a rule's comment.
func ruleComment(r *nftables.Rule) string {
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

func quoteText(s string) string { return strconv.Quote(s) }
