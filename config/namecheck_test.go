package config

import "testing"

func TestNameCheckSetting(t *testing.T) {
	for yaml, want := range map[string]string{"": "off", "name_check: off\n": "off", "name_check: enforce\n": "enforce", "name_check: audit\n": "audit"} {
		c, err := load(t, yaml, nil)
		if err != nil || c.NameCheck != want {
			t.Errorf("%q: %q, %v", yaml, c.NameCheck, err)
		}
	}
}
