package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/dnspolicy"
)

// TestDNSStatusSaysWhereThePolicyRuns: dns-policy status says whether the
// policy runs inside the follower's program or as its own, in text and
// JSON.
func TestDNSStatusSaysWhereThePolicyRuns(t *testing.T) {
	for via, want := range map[string]string{
		dnspolicy.ViaFollower: "attached in enforce via follower (inside the DNS follower's egress program), 3 names",
		dnspolicy.ViaOwn:      "attached in enforce as own program, 3 names",
		dnspolicy.ViaBoth:     "attached in enforce as own program and via follower, 3 names",
	} {
		r := dnspolicy.Report{Configured: dnspolicy.Enforce, Attached: true, Mode: dnspolicy.Enforce, Via: via, Entries: 3, Cgroup: "/cg"}
		var out bytes.Buffer
		writeDNSStatus(&out, r)
		if !strings.Contains(out.String(), want) {
			t.Errorf("via %q: %q lacks %q", via, out.String(), want)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"via":"`+via+`"`) {
			t.Errorf("JSON lacks via %q: %s", via, b)
		}
	}
}
