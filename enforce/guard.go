package enforce

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsafe marks a plan that enforce mode would make harmful; --force
// overrides it.
var ErrUnsafe = errors.New("refusing to enforce")

// Guard checks a plan before it is applied in enforce mode: the baseline
// must have been read (baselineErr is nil), must hold flows, and must not
// cut off DNS. Audit mode blocks nothing and passes.
func Guard(p *Plan, o Options, baselineErr error) error {
	if p.Mode != ModeEnforce {
		return nil
	}
	if baselineErr != nil {
		return fmt.Errorf("%w: the baseline cannot be read (%v); enforcing would leave only the built-in rules (pass --force to do it anyway)", ErrUnsafe, baselineErr)
	}
	if p.Flows == 0 {
		why := "the baseline holds no flows"
		if len(p.Skipped) > 0 {
			why = fmt.Sprintf("no flow of the baseline is left after --min-hits/--since (%d skipped)", len(p.Skipped))
		}
		return fmt.Errorf("%w: %s; enforcing would drop all egress but the built-in rules (learn first, or pass --force)", ErrUnsafe, why)
	}
	if len(o.DNSServers) == 0 {
		return fmt.Errorf("%w: no DNS server would be allowed (resolv_conf lists none and dns_servers is empty); enforcing would cut off DNS (set dns_servers, or pass --force)", ErrUnsafe)
	}
	var local []string
	for _, a := range o.DNSServers {
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
	return fmt.Errorf("%w: DNS goes to a local resolver (%s) but nothing allows it to reach an upstream server on port 53; enforcing would cut off DNS (learn while names are resolved, add dns_servers, or pass --force)",
		ErrUnsafe, strings.Join(local, ", "))
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
		if r.Kind != RuleAllow || r.Allow.UID != nil {
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
