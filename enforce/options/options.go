// Package options turns the configuration into plan options: the DNS
// servers of the right resolv.conf, the NTP servers, always_allow entries
// and name rules, each checked as it is read.
package options

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/plan"
)

// ResolvConfServers returns the nameserver addresses of a resolv.conf. A
// missing file gives none.
func ResolvConfServers(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		// An IPv6 address may carry a zone: fe80::1%eth0.
		a, err := netip.ParseAddr(strings.SplitN(fields[1], "%", 2)[0])
		if err != nil {
			continue
		}
		out = append(out, a.Unmap())
	}
	return out, sc.Err()
}

// HostResolvConf gives the DNS servers when resolv_conf is not
// configured and the namespace has no resolv.conf of its own.
const HostResolvConf = "/etc/resolv.conf"

// netnsEtc holds, per namespace name, the files `ip netns exec NAME`
// mounts over /etc (iproute2); tests move it.
var netnsEtc = "/etc/netns"

// ResolvConfFor says which resolv.conf gives the DNS servers: the
// configured one when there is one; for a namespace given by name (NAME or
// /run/netns/NAME), /etc/netns/NAME/resolv.conf when it exists, the file
// processes of that namespace see; otherwise /etc/resolv.conf.
func ResolvConfFor(configured, netns string) string {
	if configured != "" {
		return configured
	}
	name := strings.TrimPrefix(netns, "/run/netns/")
	if name != "" && name != "." && name != ".." && !strings.Contains(name, "/") {
		p := filepath.Join(netnsEtc, name, "resolv.conf")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return HostResolvConf
}

// parseAddrs reads a list of addresses of the configuration.
func parseAddrs(key string, list []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range list {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err == nil {
			err = plan.CheckAddr(a)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an address (without a zone)", key, s)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// FromConfig turns the configuration into plan options.
func FromConfig(c *config.Config) (plan.Options, error) {
	o := plan.Options{
		Table:        c.Table,
		NFLOGGroup:   uint16(c.NFLOGGroup),
		AuditLogRate: uint32(c.AuditLogRate),
		DropLogRate:  uint32(c.DropLogRate),
		MinHits:      uint64(c.MinHits),
		Since:        c.Since,
		ResolvConf:   ResolvConfFor(c.ResolvConf, c.Netns),
		Match:        c.Match,
		ServiceDepth: c.ServiceDepth,
	}
	var err error
	if o.NameCheck, err = plan.ParseNameCheck(c.NameCheck); err != nil {
		return o, err
	}
	if o.Mode, err = plan.ParseMode(c.Mode); err != nil {
		return o, err
	}
	if err := plan.ValidIdentifier(c.Table); err != nil {
		return o, fmt.Errorf("table: %w", err)
	}
	if o.DNSServers, err = ResolvConfServers(o.ResolvConf); err != nil {
		return o, err
	}
	dns, err := parseAddrs("dns_servers", c.DNSServers)
	if err != nil {
		return o, err
	}
	o.DNSServers = append(o.DNSServers, dns...)
	if o.NTPServers, err = parseAddrs("ntp_servers", c.NTPServers); err != nil {
		return o, err
	}
	if c.FollowMode != plan.FollowIP || len(c.FollowNames) > 0 {
		o.Follow = &plan.FollowOptions{Mode: c.FollowMode, TTLFloor: c.FollowTTLFloor, TTLMax: c.FollowTTLMax,
			MaxPerName: c.FollowMaxPerName, Mark: uint32(c.FollowMark)}
		for _, n := range c.FollowIPOnly {
			n = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
			if !plan.ValidName(n, false) {
				return o, fmt.Errorf("follow_ip_only: %q is not a DNS name (letters, digits, -, _ and dots)", n)
			}
			o.Follow.IPOnly = append(o.Follow.IPOnly, n)
		}
		for i, fc := range c.FollowNames {
			r, err := nameRuleFromConfig(fc)
			if err != nil {
				return o, fmt.Errorf("follow_names #%d: %w", i+1, err)
			}
			o.Follow.Names = append(o.Follow.Names, r)
		}
	}
	for i, ac := range c.AlwaysAllow {
		a, err := allowFromConfig(ac)
		if err != nil {
			return o, fmt.Errorf("always_allow #%d: %w", i+1, err)
		}
		o.AlwaysAllow = append(o.AlwaysAllow, a)
	}
	return o, nil
}

func allowFromConfig(ac config.AllowConfig) (plan.Allow, error) {
	var a plan.Allow
	if ac.Proto != "" {
		p, err := plan.ParseProto(ac.Proto)
		if err != nil {
			return a, err
		}
		a.Proto = p
	}
	if ac.Dest != "" {
		p, err := config.ParsePrefix(ac.Dest)
		if err != nil {
			return a, fmt.Errorf("dest: %w", err)
		}
		a.Dest = p
	}
	if ac.Port != 0 {
		if ac.Port < 1 || ac.Port > 65535 {
			return a, fmt.Errorf("port %d is not between 1 and 65535", ac.Port)
		}
		if a.Proto != plan.ProtoTCP && a.Proto != plan.ProtoUDP {
			return a, errors.New("a port needs proto tcp or udp")
		}
		a.Port = uint16(ac.Port)
	}
	if ac.User != "" {
		uid, err := config.LookupUID(ac.User)
		if err != nil {
			return a, fmt.Errorf("user: %w", err)
		}
		a.UID = &uid
	}
	if a.Proto == plan.ProtoICMP && a.Dest.IsValid() && a.Dest.Addr().Is6() {
		return a, errors.New("icmp with an IPv6 destination: use icmpv6")
	}
	if a.Proto == plan.ProtoICMPv6 && a.Dest.IsValid() && a.Dest.Addr().Is4() {
		return a, errors.New("icmpv6 with an IPv4 destination: use icmp")
	}
	if a.Proto == 0 && !a.Dest.IsValid() && a.UID == nil {
		return a, errors.New("allows everything: give at least a proto, a dest or a user")
	}
	if err := plan.CheckReason(ac.Reason); err != nil {
		return a, err
	}
	a.Reason = ac.Reason
	return a, nil
}

func nameRuleFromConfig(fc config.FollowConfig) (plan.NameRule, error) {
	name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(fc.Name), "."))
	if err := plan.ValidRuleName(name); err != nil {
		return plan.NameRule{}, err
	}
	if fc.User == "" {
		return plan.NameRule{}, errors.New("a user is needed: name rules are per user")
	}
	uid, err := config.LookupUID(fc.User)
	if err != nil {
		return plan.NameRule{}, fmt.Errorf("user: %w", err)
	}
	proto, err := plan.ParseProto(fc.Proto)
	if err != nil || (proto != plan.ProtoTCP && proto != plan.ProtoUDP) {
		return plan.NameRule{}, fmt.Errorf("proto %q: tcp or udp", fc.Proto)
	}
	if fc.Port < 1 || fc.Port > 65535 {
		return plan.NameRule{}, fmt.Errorf("port %d is not between 1 and 65535", fc.Port)
	}
	return plan.NameRule{UID: uid, Name: name, Proto: proto, Port: uint16(fc.Port)}, nil
}
