package deploy

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitsThatLoadEBPFMayDoSo: a unit whose command loads or pins eBPF
// programs (the learner, the follower, the name check, the DNS policy, and
// restore, which loads the DNS policy again at boot) keeps CAP_BPF and
// CAP_NET_ADMIN in its bounding set, lets the bpf syscall through its
// filter, and leaves /sys (bpffs, cgroups) writable. Restore had only
// CAP_NET_ADMIN and @system-service, so it could not do what its --help
// says.
func TestUnitsThatLoadEBPFMayDoSo(t *testing.T) {
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) == 0 {
		t.Fatalf("no units: %v", err)
	}
	loaders := map[string]bool{
		"egress-learn.service":              true,
		"egress-enforce-follow.service":     true,
		"egress-enforce-namecheck.service":  true,
		"egress-enforce-dns-policy.service": true,
		"egress-enforce-restore.service":    true,
	}
	seen := 0
	for _, u := range units {
		if !loaders[filepath.Base(u)] {
			continue
		}
		seen++
		keys := unitKeys(t, u)
		caps := strings.Fields(keys["CapabilityBoundingSet"])
		for _, c := range []string{"CAP_BPF", "CAP_NET_ADMIN"} {
			if !contains(caps, c) {
				t.Errorf("%s: CapabilityBoundingSet lacks %s", u, c)
			}
		}
		if f := strings.Fields(keys["SystemCallFilter"]); len(f) > 0 && !contains(f, "bpf") && !contains(f, "@privileged") {
			t.Errorf("%s: SystemCallFilter=%s leaves out the bpf syscall", u, strings.Join(f, " "))
		}
		for _, k := range []string{"ProtectKernelTunables", "ProtectControlGroups"} {
			if strings.TrimSpace(keys[k]) == "yes" {
				t.Errorf("%s: %s=yes makes /sys read-only (bpffs pins, cgroup attach)", u, k)
			}
		}
	}
	if seen != len(loaders) {
		t.Errorf("found %d of the %d units that load eBPF", seen, len(loaders))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
