package nft

import (
	"errors"
	"fmt"
	"slices"

	"github.com/egresskit/egress/enforce/plan"
)

// Status is what the kernel holds of our table.
type Status struct {
	Target  string      `json:"target"`
	Table   string      `json:"table"`
	Present bool        `json:"present"`
	Mode    plan.Mode   `json:"mode,omitempty"`
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
	// after the limit; all of them for a rule without a limit; nil for a
	// limited rule without the second counter, from before drop_log_rate).
	DropsLogged  *Counter `json:"drops_logged,omitempty"`
	AuditsLogged *Counter `json:"audits_logged,omitempty"`
	// LogGroup is the NFLOG group the default rules log to; DropLogRate
	// and AuditLogRate are their logs' limits in packets per second (0: no
	// limit, every packet is logged).
	LogGroup     uint16 `json:"nflog_group,omitempty"`
	DropLogRate  uint64 `json:"drop_log_rate,omitempty"`
	AuditLogRate uint64 `json:"audit_log_rate,omitempty"`
	// FollowMarkAccepted sums the counters of the follow-mark rules: the
	// packets the table accepted on the follow mark alone, to
	// just-resolved destinations no set held yet. nil for a table without
	// name rules.
	FollowMarkAccepted *Counter `json:"follow_mark_accepted,omitempty"`
	// Staged enforcement: the users enforced, or the users audited.
	EnforceUIDs []uint32 `json:"enforce_uids,omitempty"`
	AuditUIDs   []uint32 `json:"audit_uids,omitempty"`
	// Staged enforcement by service: the services whose cgroup ids the
	// table enforces, or audits, by path ("cgroup-id:N": an id no cgroup
	// has any more, the service it stood for was restarted or stopped).
	EnforceServices []string `json:"enforce_services,omitempty"`
	AuditServices   []string `json:"audit_services,omitempty"`
	// Counters of every rule that has one, by rule comment.
	Counters []RuleCounter `json:"counters,omitempty"`
	// Services are the services the service sets hold elements of, by
	// cgroup path ("cgroup-id:N": an id no cgroup has, a stale element).
	Services []ServiceStatus `json:"services,omitempty"`
	// Generation is the generation whose plan the table holds, as its
	// stamp says (0: not stamped, or not known when applied).
	Generation uint64 `json:"generation,omitempty"`

	elements map[string][]plan.Element
	stamp    *Stamp
}

// SetStatus is the size of one of our sets.
type SetStatus struct {
	Name     string `json:"name"`
	Elements int    `json:"elements"`
	// Counted is true when Elements was counted in the kernel, false when
	// it is the number the table's stamp gives (what the acknowledged
	// transaction wrote).
	Counted bool `json:"counted"`
	// SizeOnly: the table carries no stamp (nft -f loaded it), so
	// Elements is the set's size, at least its number of elements.
	SizeOnly bool `json:"size_only,omitempty"`
}

// ServiceStatus is how many elements a service has in the kernel.
type ServiceStatus struct {
	Service  string `json:"service"`
	Elements int    `json:"elements"`
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

// Installed is the status as a diff sees it.
func (st *Status) Installed() plan.Installed {
	return plan.Installed{Target: st.Target, Present: st.Present, Mode: st.Mode, Elements: st.elements, Rules: st.Rules}
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

// countDefault adds the counters of a default rule (one whose log has
// prefix) to the status: cnt counts every packet, logged those that
// reached the log (nil: not counted).
func (st *Status) countDefault(prefix string, cnt, logged *Counter) {
	if st.Default == nil {
		st.Default = &Counter{}
	}
	st.Default.Packets += cnt.Packets
	st.Default.Bytes += cnt.Bytes
	switch prefix {
	case plan.PrefixDrop:
		st.Dropped.Packets += cnt.Packets
		st.Dropped.Bytes += cnt.Bytes
		st.DropsLogged = addCounter(st.DropsLogged, logged)
	case plan.PrefixAudit:
		st.Audited.Packets += cnt.Packets
		st.Audited.Bytes += cnt.Bytes
		st.AuditsLogged = addCounter(st.AuditsLogged, logged)
	}
}

// countRule adds the counter of a rule that has one: to the default
// counters when it logs with one of our prefixes, to the follow mark's
// when it is a follow-mark rule.
func (st *Status) countRule(comment string, c ruleCount) {
	if c.cnt == nil {
		return
	}
	st.Counters = append(st.Counters, RuleCounter{Rule: comment, Counter: *c.cnt})
	if plan.IsFollowMarkComment(comment) {
		st.FollowMarkAccepted = addCounter(st.FollowMarkAccepted, c.cnt)
	}
	if c.prefix != plan.PrefixDrop && c.prefix != plan.PrefixAudit {
		return
	}
	st.LogGroup = c.group
	logged := c.logged
	if !c.limited {
		logged = c.cnt // no limit: every packet reached the log
	}
	st.countDefault(c.prefix, c.cnt, logged)
	if c.prefix == plan.PrefixDrop {
		st.DropLogRate = c.rate
	} else {
		st.AuditLogRate = c.rate
	}
}

// ruleCount is what a rule counts: every packet (cnt), and for a default
// rule, its log's prefix, group and limit, and the packets the limit let
// through to the log (logged, counted by a second counter).
type ruleCount struct {
	cnt, logged *Counter
	prefix      string
	group       uint16
	limited     bool
	rate        uint64
}

// modeOf is the mode the default rules make: staged when some drop and
// some only log.
func modeOf(drops, audits int) plan.Mode {
	switch {
	case drops > 0 && audits > 0:
		return plan.ModeStaged
	case drops > 0:
		return plan.ModeEnforce
	case audits > 0:
		return plan.ModeAudit
	}
	return ""
}

// matches checks the table read back against the plan applied.
func (st *Status) matches(p *plan.Plan) error {
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
