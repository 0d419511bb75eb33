package main

import (
	"strings"
	"testing"
)

// TestDeniedSaysTheDNSPolicyIsOff: with dns_policy off, denied says no
// query is checked, rather than asking whether a watcher runs.
func TestDeniedSaysTheDNSPolicyIsOff(t *testing.T) {
	for mode, want := range map[string]string{
		"off":     "dns_policy is off, so no query is checked",
		"enforce": "not allowed by dns_policy (enforce): none recorded (is \"egress-enforce dns-policy watch\" running?)",
	} {
		var b strings.Builder
		(&dnsDenied{}).writeSummary(&b, mode)
		if !strings.Contains(b.String(), want) {
			t.Errorf("%s: %q, want %q", mode, b.String(), want)
		}
	}
}
