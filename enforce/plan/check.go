package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrUnsafe marks a plan that enforce mode would make harmful; --force
// overrides it.
var ErrUnsafe = errors.New("refusing to enforce")

// Guard checks a plan before it is applied, from the plan alone (so a
// rollback or a restore can check a stored plan): a plan that drops
// anything (enforce mode, or staged enforcement either way) needs a
// baseline that was read (baselineErr is nil), holds flows, and does not
// cut off DNS (the DNS servers are the plan's "dns servers" rules). A plan
// that drops nothing (audit) passes. Errors wrap ErrUnsafe; --force
// overrides them.
func Guard(p *Plan, baselineErr error) error {
	if !p.Drops() {
		return nil
	}
	who := "enforcing"
	if p.Mode == ModeStaged {
		who = "staged enforcement"
	}
	if baselineErr != nil {
		return fmt.Errorf("%w: the baseline cannot be read (%v); %s would leave only the built-in rules (pass --force to do it anyway)", ErrUnsafe, baselineErr, who)
	}
	if p.Flows == 0 {
		why := "the baseline holds no flows"
		if len(p.Skipped) > 0 {
			why = fmt.Sprintf("no flow of the baseline is left after --min-hits/--since (%d skipped)", len(p.Skipped))
		}
		return fmt.Errorf("%w: %s; %s would drop all egress but the built-in rules (learn first, or pass --force)", ErrUnsafe, why, who)
	}
	servers := p.DNSServers()
	if len(servers) == 0 {
		return fmt.Errorf("%w: no DNS server would be allowed (%s lists none and dns_servers is empty); %s would cut off DNS (set dns_servers, or pass --force)",
			ErrUnsafe, p.resolvConfName(), who)
	}
	var local []string
	for _, a := range servers {
		if !a.IsLoopback() {
			return nil
		}
		local = append(local, a.String())
	}
	// Only local resolvers (systemd-resolved, dnsmasq, unbound): their
	// upstream must be allowed somewhere.
	if p.allowsPort53() {
		return nil
	}
	return fmt.Errorf("%w: DNS goes to a local resolver (%s) but nothing allows it to reach an upstream server on port 53; %s would cut off DNS (learn while names are resolved, add dns_servers, or pass --force)",
		ErrUnsafe, strings.Join(local, ", "), who)
}

// Drops reports whether the plan drops anything: a drop policy or a drop
// rule.
func (p *Plan) Drops() bool {
	if p.Chain.Policy != "accept" || p.Mode != ModeAudit {
		return true
	}
	for _, r := range p.Rules {
		if r.Kind == RuleDefault && r.Action != "audit" {
			return true
		}
	}
	return false
}

// ReasonDNS is the reason of the rules that allow the DNS servers.
const ReasonDNS = "dns servers"

// DNSServers are the addresses the plan's DNS rules allow on port 53.
func (p *Plan) DNSServers() []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{} // the UDP and TCP rules list the same servers
	for _, r := range p.Rules {
		a := r.Allow
		if r.Kind != RuleAllow || a == nil || a.Reason != ReasonDNS || a.UID != nil || a.Port != 53 {
			continue
		}
		addrs := a.Addrs
		if a.Dest.IsValid() {
			addrs = []netip.Addr{a.Dest.Addr()}
		}
		for _, ad := range addrs {
			if !seen[ad] {
				seen[ad] = true
				out = append(out, ad)
			}
		}
	}
	return out
}

func (p *Plan) resolvConfName() string {
	if p.ResolvConf == "" {
		return "resolv_conf"
	}
	return p.ResolvConf
}

// allowsPort53 reports whether some element or allow rule lets traffic to
// a non-loopback address on port 53 out.
func (p *Plan) allowsPort53() bool {
	for _, s := range p.Sets {
		for _, e := range s.Elements {
			if e.Port == 53 && !e.IP.IsLoopback() {
				return true
			}
		}
	}
	for _, r := range p.Rules {
		if r.Kind != RuleAllow || r.Allow == nil || r.Allow.UID != nil {
			continue
		}
		a := r.Allow
		if a.Port != 53 && (a.Port != 0 || (a.Proto != 0 && a.Proto != ProtoUDP && a.Proto != ProtoTCP)) {
			continue
		}
		switch {
		case len(a.Addrs) > 0:
			for _, ad := range a.Addrs {
				if !ad.IsLoopback() {
					return true
				}
			}
		case !a.Dest.IsValid() || !a.Dest.Masked().Addr().IsLoopback():
			return true
		}
	}
	return false
}
