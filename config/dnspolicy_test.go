package config

import (
	"strings"
	"testing"
)

func TestDNSPolicyConfig(t *testing.T) {
	c, err := load(t, "dns_policy: enforce\ndns_allow:\n  - name: \"*.Example.COM.\"\n  - name: ntp.ubuntu.com\n    user: root\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	es, err := c.DNSAllowEntries()
	if err != nil || c.DNSPolicy != "enforce" || len(es) != 2 || es[0].UID != 0xffffffff || es[1].UID != 0 {
		t.Fatalf("%q %+v %v", c.DNSPolicy, es, err)
	}
	if c, err := load(t, "db: /tmp/x.db\n", nil); err != nil || c.DNSPolicy != "off" {
		t.Errorf("default: %v %v", c, err)
	}
	for text, want := range map[string]string{
		"dns_policy: block\n":                                  "dns_policy",
		"dns_allow:\n  - name: \"a.*.com\"\n":                  "wildcard",
		"dns_allow:\n  - name: \"*\"\n":                        "suffix",
		"dns_allow:\n  - name: \"a..com\"\n":                   "empty label",
		"dns_allow:\n  - name: x.com\n    user: nosuchuser9\n": "nosuchuser9",
		"dns_max_names: 0\n":                                   "dns_max_names",
	} {
		if _, err := load(t, text, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", text, err, want)
		}
	}
}
