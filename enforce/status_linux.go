//go:build linux

package enforce

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Status is what the kernel holds of our table.
type Status struct {
	Target  string      `json:"target"`
	Table   string      `json:"table"`
	Present bool        `json:"present"`
	Mode    Mode        `json:"mode,omitempty"`
	Policy  string      `json:"policy,omitempty"`
	Sets    []SetStatus `json:"sets,omitempty"`
	Rules   []string    `json:"rules,omitempty"` // rule comments, in order
	// Default sums the counters of the default rules: what the allow-list
	// did not cover (dropped, or only logged in audit).
	Default *Counter `json:"default_counter,omitempty"`
	// Dropped and Audited split Default by what the rules did.
	Dropped Counter `json:"dropped"`
	Audited Counter `json:"audited"`
	// DropsLogged and AuditsLogged are the packets of Dropped and Audited
	// the rate limits let through to the log (counted by a second counter
	// after the limit; nil for a table without it).
	DropsLogged  *Counter `json:"drops_logged,omitempty"`
	AuditsLogged *Counter `json:"audits_logged,omitempty"`
	// Staged enforcement: the users enforced, or the users audited.
	EnforceUIDs []uint32 `json:"enforce_uids,omitempty"`
	AuditUIDs   []uint32 `json:"audit_uids,omitempty"`
	// Counters of every rule that has one, by rule comment.
	Counters []RuleCounter `json:"counters,omitempty"`
	// Follow is what the follower last saved, when one runs for the table.
	Follow *FollowStats `json:"follow,omitempty"`

	elements map[string][]Element
}

// SetStatus is the size of one of our sets.
type SetStatus struct {
	Name     string `json:"name"`
	Elements int    `json:"elements"`
	// Counted is true when Elements was counted in the kernel, false when
	// it is the set's size, which apply makes its number of elements.
	Counted bool `json:"counted"`
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// RuleCounter is the counter of one rule.
type RuleCounter struct {
	Rule string `json:"rule"`
	Counter
}

func isNotFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist)
}

// ReadStatus reads our table from the target namespace. A missing table
// is not an error: Present is false. With elements, every set element is
// read (diff needs them; the kernel's dump of a 100,000-element set takes
// seconds); without, a set's number of elements is its size, which apply
// sets to exactly that.
func ReadStatus(t Target, table string, elements bool) (*Status, error) {
	st := &Status{Target: t.String(), Table: table, elements: map[string][]Element{}}
	c, done, err := t.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	tab, err := ourTable(c, t, table)
	if err != nil {
		return nil, err
	}
	if tab == nil {
		return st, nil
	}
	st.Present = true
	sets, err := c.GetSets(tab)
	if err != nil {
		return nil, fmt.Errorf("list sets of table inet %s: %w", table, err)
	}
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		if s.Name == SetEnforceUsers || s.Name == SetAuditUsers {
			elems, err := c.GetSetElements(s)
			if err != nil {
				return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
			}
			var uids []uint32
			for _, e := range elems {
				if len(e.Key) == 4 {
					uids = append(uids, binaryutil.NativeEndian.Uint32(e.Key))
				}
			}
			slices.Sort(uids)
			if s.Name == SetEnforceUsers {
				st.EnforceUIDs = uids
			} else {
				st.AuditUIDs = uids
			}
			continue
		}
		if !elements && s.Size > 0 && !s.HasTimeout {
			// apply sizes each set to exactly its elements.
			st.Sets = append(st.Sets, SetStatus{Name: s.Name, Elements: int(s.Size)})
			continue
		}
		elems, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		st.Sets = append(st.Sets, SetStatus{Name: s.Name, Elements: len(elems), Counted: true})
		for _, el := range elems {
			if e, ok := parseElementKey(el.Key); ok {
				e.Comment = el.Comment
				st.elements[s.Name] = append(st.elements[s.Name], e)
			}
		}
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != table || ch.Name != "output" {
			continue
		}
		if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			st.Policy = "drop"
		} else {
			st.Policy = "accept"
		}
		rules, err := c.GetRules(tab, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain output: %w", err)
		}
		var drops, audits int
		for _, r := range rules {
			cmt, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			st.Rules = append(st.Rules, cmt)
			var cnt, logged *Counter // the rule's counter; one after a limit
			prefix := ""
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Counter:
					if cnt == nil {
						cnt = &Counter{Packets: e.Packets, Bytes: e.Bytes}
					} else {
						logged = &Counter{Packets: e.Packets, Bytes: e.Bytes}
					}
				case *expr.Log:
					prefix = string(e.Data)
				}
			}
			if cnt != nil {
				st.Counters = append(st.Counters, RuleCounter{Rule: cmt, Counter: *cnt})
			}
			if cnt == nil || prefix == "" {
				continue
			}
			if st.Default == nil {
				st.Default = &Counter{}
			}
			st.Default.Packets += cnt.Packets
			st.Default.Bytes += cnt.Bytes
			switch prefix {
			case PrefixDrop:
				drops++
				st.Dropped.Packets += cnt.Packets
				st.Dropped.Bytes += cnt.Bytes
				st.DropsLogged = addCounter(st.DropsLogged, logged)
			case PrefixAudit:
				audits++
				st.Audited.Packets += cnt.Packets
				st.Audited.Bytes += cnt.Bytes
				st.AuditsLogged = addCounter(st.AuditsLogged, logged)
			}
		}
		switch {
		case drops > 0 && audits > 0:
			st.Mode = ModeStaged
		case drops > 0:
			st.Mode = ModeEnforce
		case audits > 0:
			st.Mode = ModeAudit
		}
	}
	return st, nil
}

// addCounter adds c to sum; nil stays nil.
func addCounter(sum, c *Counter) *Counter {
	if c == nil {
		return sum
	}
	if sum == nil {
		sum = &Counter{}
	}
	sum.Packets += c.Packets
	sum.Bytes += c.Bytes
	return sum
}

// matches checks the table read back against the plan applied.
func (st *Status) matches(p *Plan) error {
	if !st.Present {
		return errors.New("the table is missing after apply")
	}
	if st.Policy != p.Chain.Policy {
		return fmt.Errorf("chain policy is %s, want %s", st.Policy, p.Chain.Policy)
	}
	if st.Mode != p.Mode {
		return fmt.Errorf("mode is %q, want %q", st.Mode, p.Mode)
	}
	if len(st.Rules) != len(p.Rules) {
		return fmt.Errorf("%d rules, want %d", len(st.Rules), len(p.Rules))
	}
	for i, r := range p.Rules {
		if st.Rules[i] != r.Comment {
			return fmt.Errorf("rule %d is %q, want %q", i+1, st.Rules[i], r.Comment)
		}
	}
	for _, s := range p.Sets {
		i := slices.IndexFunc(st.Sets, func(x SetStatus) bool { return x.Name == s.Name })
		if i < 0 {
			return fmt.Errorf("set %s is missing", s.Name)
		}
		if st.Sets[i].Elements != len(s.Elements) {
			return fmt.Errorf("set %s has %d elements, want %d", s.Name, st.Sets[i].Elements, len(s.Elements))
		}
	}
	return nil
}

// verifyCountLimit: up to this many elements, apply counts them in the
// kernel; above it, the acknowledged transaction is trusted for the
// elements and the rest is checked.
const verifyCountLimit = 10000

// Diff compares a plan with the table in the target namespace.
func DiffKernel(p *Plan, t Target) (*Diff, error) {
	st, err := ReadStatus(t, p.Table, true)
	if err != nil {
		return nil, err
	}
	return diff(st, p), nil
}
