package config

import (
	"fmt"
	"strings"

	"github.com/egresskit/egress/enforce/dnspolicy"
)

// DNSAllowConfig is one dns_allow entry: a name (a leading "*." allowed)
// any user, or one user, may ask for under dns_policy audit or enforce.
type DNSAllowConfig struct {
	Name string `mapstructure:"name"`
	// User is a user name or uid; "" or "*" for every user.
	User string `mapstructure:"user"`
}

// resolveDNSPolicy checks dns_policy, dns_allow and dns_max_names.
func (c *Config) resolveDNSPolicy() error {
	m, err := dnspolicy.ParseMode(c.DNSPolicy)
	if err != nil {
		return err
	}
	c.DNSPolicy = string(m)
	if c.DNSMaxNames < 1 || c.DNSMaxNames > 1<<24 {
		return fmt.Errorf("dns_max_names: %d is not between 1 and %d", c.DNSMaxNames, 1<<24)
	}
	for i, a := range c.DNSAllow {
		if _, err := dnspolicy.Normalize(a.Name); err != nil {
			return fmt.Errorf("dns_allow[%d]: %w", i, err)
		}
		if u := strings.TrimSpace(a.User); u != "" && u != "*" {
			if _, err := LookupUID(u); err != nil {
				return fmt.Errorf("dns_allow[%d]: %w", i, err)
			}
		}
	}
	return nil
}

// DNSAllowEntries are the dns_allow entries for the policy.
func (c *Config) DNSAllowEntries() ([]dnspolicy.Entry, error) {
	var out []dnspolicy.Entry
	for i, a := range c.DNSAllow {
		uid := uint32(dnspolicy.AllUsers)
		if u := strings.TrimSpace(a.User); u != "" && u != "*" {
			var err error
			if uid, err = LookupUID(u); err != nil {
				return nil, fmt.Errorf("dns_allow[%d]: %w", i, err)
			}
		}
		out = append(out, dnspolicy.Entry{UID: uid, Name: a.Name, Source: "dns_allow"})
	}
	return out, nil
}
