package config

import (
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDNSResolverUsersDefault: by default, root and those of the usual
// resolver users this host has; the others are left out without a word.
func TestDNSResolverUsersDefault(t *testing.T) {
	if _, err := os.Stat(DefaultFile); err == nil {
		t.Skip(DefaultFile + " exists on this machine")
	}
	c, err := load(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{}
	for _, name := range DefaultResolverUsers {
		if u, err := user.Lookup(name); err == nil {
			n, _ := strconv.ParseUint(u.Uid, 10, 32)
			want = append(want, uint32(n))
		}
	}
	if !slices.Equal(c.DNSResolverUIDs, want) || !slices.Contains(want, 0) {
		t.Errorf("default resolvers %v, want %v (with root)", c.DNSResolverUIDs, want)
	}
	got, err := resolverUIDs([]string{DefaultResolvers}, []string{"no-such-resolver-egress", "root"})
	if err != nil || !slices.Equal(got, []uint32{0}) {
		t.Errorf("a default user this host lacks: %v, %v; want [0] and no error", got, err)
	}
}

// TestDNSResolverUsersConfigured: names, UIDs and "default" mix; an empty
// list trusts no resolver; a name the operator gave that this host lacks
// is an error naming the key.
func TestDNSResolverUsersConfigured(t *testing.T) {
	for _, c := range []struct {
		yaml string
		env  map[string]string
		want []uint32
	}{
		{"dns_resolver_users: [root, \"4343\", \"0\"]\n", nil, []uint32{0, 4343}},
		{"dns_resolver_users: []\n", nil, []uint32{}},
		{"", map[string]string{"EGRESS_DNS_RESOLVER_USERS": "4343,root"}, []uint32{4343, 0}},
	} {
		t.Run(strings.TrimSpace(c.yaml), func(t *testing.T) { // its own environment
			cfg, err := load(t, c.yaml, c.env)
			if err != nil {
				t.Fatalf("%q %v: %v", c.yaml, c.env, err)
			}
			if !slices.Equal(cfg.DNSResolverUIDs, c.want) {
				t.Errorf("%q %v: resolvers %v, want %v", c.yaml, c.env, cfg.DNSResolverUIDs, c.want)
			}
		})
	}
	cfg, err := load(t, "dns_resolver_users: [default, \"4343\"]\n", nil)
	if err != nil || !slices.Contains(cfg.DNSResolverUIDs, 0) || !slices.Contains(cfg.DNSResolverUIDs, 4343) {
		t.Errorf("default and 4343: %+v, %v", cfg, err)
	}
	_, err = load(t, "dns_resolver_users: [root, no-such-resolver-egress]\n", nil)
	if err == nil || !strings.Contains(err.Error(), "dns_resolver_users") || !strings.Contains(err.Error(), "no-such-resolver-egress") {
		t.Errorf("an unknown configured user: %v, want an error naming the key and the user", err)
	}
}
