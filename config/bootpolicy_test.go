package config

import (
	"strings"
	"testing"
)

func TestBootPolicy(t *testing.T) {
	c, err := load(t, "", nil)
	if err != nil || c.BootPolicy != "open" {
		t.Errorf("default boot_policy %q %v, want open", c.BootPolicy, err)
	}
	if c, err := load(t, "boot_policy: closed\n", nil); err != nil || c.BootPolicy != "closed" {
		t.Errorf("boot_policy: closed: %+v %v", c, err)
	}
	if _, err := load(t, "", map[string]string{"EGRESS_BOOT_POLICY": "shut"}); err == nil || !strings.Contains(err.Error(), `boot_policy: "shut" is not open or closed`) {
		t.Errorf("an invalid boot_policy: %v", err)
	}
}
