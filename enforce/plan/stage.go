package plan

import (
	"fmt"
	"slices"
)

// stage sets who the plan enforces: with mode enforce, only the enforce
// users or services (others audited), or everyone but the audit users or
// services; everyone otherwise. It sets the mode, the user and service
// sets and the chain's policy, not the rules.
func (p *Plan) stage(mode Mode, enforceUIDs, auditUIDs []uint32, enforceSvcs, auditSvcs []string) {
	enforce, audit := sortedUIDs(enforceUIDs), sortedUIDs(auditUIDs)
	p.Mode, p.EnforceUIDs, p.AuditUIDs, p.UserSets, p.Chain.Policy = mode, nil, nil, nil, "accept"
	p.EnforceServices, p.AuditServices, p.ServiceSets = nil, nil, nil
	switch {
	case len(enforce) > 0:
		p.Mode, p.EnforceUIDs = ModeStaged, enforce // others audited: policy accept
		p.UserSets = []UserSet{{SetEnforceUsers, enforce}}
	case len(audit) > 0:
		p.Mode, p.AuditUIDs = ModeStaged, audit
		p.UserSets = []UserSet{{SetAuditUsers, audit}}
		p.Chain.Policy = "drop"
	case len(enforceSvcs) > 0:
		p.Mode, p.EnforceServices = ModeStaged, sortedServices(enforceSvcs)
		p.ServiceSets = []ServiceSet{{SetEnforceServices, p.EnforceServices}}
	case len(auditSvcs) > 0:
		p.Mode, p.AuditServices = ModeStaged, sortedServices(auditSvcs)
		p.ServiceSets = []ServiceSet{{SetAuditServices, p.AuditServices}}
		p.Chain.Policy = "drop"
	case mode == ModeEnforce:
		p.Chain.Policy = "drop"
	}
}

// isDefault reports whether a rule is one of the default rules (what
// happens to traffic the allow-list did not accept).
func isDefault(r *Rule) bool {
	return r.Kind == RuleDefault || r.Kind == RuleDrop || r.Kind == RuleAuditAccept
}

// Restage is p with other users enforced: the same allow-list (sets,
// allow rules, name rules), with the mode, the user sets, the policy and
// the default rules of Options{Mode: mode, EnforceUIDs: enforce,
// AuditUIDs: audit}, as Build would make them. p is not changed. It is
// how promote grows staged enforcement without touching the allow-list.
// A staging by service is replaced too.
func Restage(p *Plan, mode Mode, enforce, audit []uint32) (*Plan, error) {
	o := Options{Mode: mode, EnforceUIDs: enforce, AuditUIDs: audit, Match: p.Match}
	if mode != ModeAudit && mode != ModeEnforce {
		return nil, fmt.Errorf("restage: mode %q is not audit or enforce", mode)
	}
	if err := o.Check(); err != nil {
		return nil, err
	}
	q := *p
	q.stage(mode, enforce, audit, nil, nil)
	q.Rules = slices.DeleteFunc(slices.Clone(p.Rules), func(r Rule) bool { return isDefault(&r) })
	def := q.defaultRules()
	for i := range def {
		def[i].Text = q.RuleText(&def[i])
	}
	q.Rules = append(q.Rules, def...)
	return &q, nil
}
