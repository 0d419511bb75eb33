package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Staged enforcement by service: the services enforced (or audited) are a
// set of cgroup v2 ids, matched by the default rules with `socket cgroupv2
// level L @set`, one rule per level the staged services sit at. An id
// changes when the service's cgroup is created again (a restart): the
// keeper (egress-enforce services, or follow) replaces it in the same
// transaction as the service's elements. Until it does, a restarted
// service is not in the set: with --audit-services it is enforced (the
// safe side); with --enforce-services it is audited, which status says.

// Names of the service sets of staged enforcement.
const (
	SetEnforceServices = "enforce_services"
	SetAuditServices   = "audit_services"
)

// ServiceSet is a named set of services (type cgroupsv2).
type ServiceSet struct {
	Name     string   `json:"name"`
	Services []string `json:"services"`
}

// IsServiceStageSet reports whether a set name is one of the sets of
// staged enforcement by service.
func IsServiceStageSet(name string) bool {
	return name == SetEnforceServices || name == SetAuditServices
}

// StagedServices are the services the plan stages (enforced or audited),
// whether they run or not.
func (p *Plan) StagedServices() []string {
	return append(slices.Clone(p.EnforceServices), p.AuditServices...)
}

// checkServiceStaging checks --enforce-services and --audit-services.
func (o *Options) checkServiceStaging() error {
	svcs := append(slices.Clone(o.EnforceServices), o.AuditServices...)
	if len(svcs) == 0 {
		return nil
	}
	switch {
	case len(o.EnforceServices) > 0 && len(o.AuditServices) > 0:
		return fmt.Errorf("--enforce-services and --audit-services exclude each other: give the services to enforce, or the services to keep in audit")
	case len(o.EnforceUIDs) > 0 || len(o.AuditUIDs) > 0:
		return fmt.Errorf("staged enforcement is by user or by service, not both: give --enforce-users/--audit-users or --enforce-services/--audit-services")
	case o.Mode != ModeEnforce:
		return fmt.Errorf("--enforce-services and --audit-services stage an enforcement: use them with --mode enforce")
	}
	if m, _ := ParseMatch(o.Match); m == MatchUser {
		return fmt.Errorf("--enforce-services and --audit-services need per-service rules: use them with match service or user,service")
	}
	for _, s := range svcs {
		if err := ValidServicePath(s); err != nil {
			return fmt.Errorf("staged service: %w", err)
		}
	}
	return nil
}

// ParseService reads a service as an operator gives it: a cgroup v2 path
// relative to the mount, with or without a leading slash
// (system.slice/nginx.service), or a unit name alone (nginx.service,
// taken as system.slice/nginx.service).
func ParseService(s string) (string, error) {
	s = strings.Trim(strings.TrimSpace(s), "/")
	if !strings.Contains(s, "/") && (strings.HasSuffix(s, ".service") || strings.HasSuffix(s, ".scope")) {
		s = "system.slice/" + s
	}
	if err := ValidServicePath(s); err != nil {
		return "", err
	}
	return s, nil
}

func sortedServices(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// stageLevels are the cgroup levels of the staged services, sorted.
func (p *Plan) stageLevels() []int {
	var levels []int
	for _, s := range p.StagedServices() {
		if l := ServiceLevel(s); !slices.Contains(levels, l) {
			levels = append(levels, l)
		}
	}
	slices.Sort(levels)
	return levels
}

// serviceDefaultRules are the default rules of staged enforcement by
// service: for each level, the staged services' sockets are dropped (or
// audited and accepted), then everything else is audited (or dropped).
func (p *Plan) serviceDefaultRules() []Rule {
	set, list := SetEnforceServices, p.EnforceServices
	if len(list) == 0 {
		set, list = SetAuditServices, p.AuditServices
	}
	levels := p.stageLevels()
	var rules []Rule
	for _, l := range levels {
		who := "services " + strings.Join(list, " ")
		if len(levels) > 1 {
			who = fmt.Sprintf("services at cgroup level %d", l)
		}
		if set == SetEnforceServices {
			rules = append(rules,
				Rule{Kind: RuleDefault, Action: "drop", Set: set, Level: l, Comment: sanitizeComment("default enforce: " + who)},
				Rule{Kind: RuleDrop, Set: set, Level: l, Comment: sanitizeComment("default enforce: drop " + who)})
		} else {
			rules = append(rules,
				Rule{Kind: RuleDefault, Action: "audit", Set: set, Level: l, Comment: sanitizeComment("default audit: " + who)},
				Rule{Kind: RuleAuditAccept, Set: set, Level: l, Comment: sanitizeComment("audited services pass: " + who)})
		}
	}
	if set == SetEnforceServices {
		return append(rules, Rule{Kind: RuleDefault, Action: "audit", Comment: "default audit: everything else"})
	}
	return append(rules,
		Rule{Kind: RuleDefault, Action: "drop", Comment: "default enforce: everything else"},
		Rule{Kind: RuleDrop, Comment: "default enforce: drop everything else"})
}

// whoText matches what a default rule is for: a set of users, or the
// socket's cgroup at the rule's level in a set of services; nothing for
// everyone.
func whoText(r *Rule) string {
	if IsServiceStageSet(r.Set) {
		return fmt.Sprintf("socket cgroupv2 level %d @%s ", r.Level, r.Set)
	}
	return usersText(r.Set)
}

// runningStage leaves out of the staging sets the services that do not
// run (they have no cgroup id), and lists them in Stopped (with repeats:
// Running sorts and compacts the list).
func (p *Plan) runningStage(running func(string) bool) {
	sets := slices.Clone(p.ServiceSets)
	for i := range sets {
		sets[i].Services = slices.DeleteFunc(slices.Clone(sets[i].Services), func(s string) bool {
			if running(s) {
				return false
			}
			p.Stopped = append(p.Stopped, s)
			return true
		})
	}
	p.ServiceSets = sets
}

// serviceSetsText writes the staging sets of the script: services by path
// (under root, as nft resolves them).
func (p *Plan) serviceSetsText(b textWriter) error {
	for _, s := range p.ServiceSets {
		if err := ident("set", s.Name); err != nil {
			return err
		}
		fmt.Fprintf(b, "\tset %s {\n\t\ttype cgroupsv2\n", s.Name)
		if len(s.Services) > 0 {
			paths := make([]string, len(s.Services))
			for i, svc := range s.Services {
				if err := ValidServicePath(svc); err != nil {
					return fmt.Errorf("render the script: set %s: %w", s.Name, err)
				}
				if p.CgroupRoot != "" {
					svc = p.CgroupRoot + "/" + svc
				}
				paths[i] = strconv.Quote(svc)
			}
			fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(paths, ", "))
		}
		b.WriteString("\t}\n\n")
	}
	return nil
}
