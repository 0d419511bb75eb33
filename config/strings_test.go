package config

import (
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/plan"
)

// TestStringsThatReachTheScript: the table name, addresses with a zone and
// control characters in paths are refused with the key named.
func TestStringsThatReachTheScript(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"table: \"egress\\nadd table inet x\"\n", "table"},
		{"table: \"a b\"\n", "table"},
		{"table: \"" + strings.Repeat("a", 65) + "\"\n", "table"},
		{"table: \"1abc\"\n", "table"},
		{"dns_servers: [\"fe80::1%eth0\"]\n", "dns_servers"},
		{"ntp_servers: [\"fe80::1%x\\nadd table inet x\"]\n", "ntp_servers"},
		{"db: \"/tmp/x\\nadd table inet x\"\n", "db"},
		{"resolv_conf: \"/etc/resolv.conf\\n\"\n", "resolv_conf"},
	} {
		if _, err := load(t, c.yaml, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want one naming %s", c.yaml, err, c.want)
		}
	}
	for _, ok := range []string{"egress", "egress_2", "Egress-test", "_x"} {
		if err := plan.ValidIdentifier(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
