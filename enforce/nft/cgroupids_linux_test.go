//go:build linux

package nft

import "testing"

// TestCgroupRoot: script paths start where nft resolves them, under
// /sys/fs/cgroup; a mount elsewhere is an error, not a wrong path.
func TestCgroupRoot(t *testing.T) {
	for mount, want := range map[string]string{
		"/sys/fs/cgroup":          "",
		"/sys/fs/cgroup/":         "",
		"/sys/fs/cgroup/unified":  "unified",
		"/sys/fs/cgroup/unified/": "unified",
	} {
		if got, err := (CgroupIDs{Mount: mount}).Root(); err != nil || got != want {
			t.Errorf("Root of %s = %q, %v; want %q", mount, got, err, want)
		}
	}
	for _, mount := range []string{"/mnt/cgroup2", "/sys/fs/cgroupx", "/sys/fs/cgroup/a b", "/sys/fs/cgroup/../x"} {
		if got, err := (CgroupIDs{Mount: mount}).Root(); err == nil {
			t.Errorf("Root of %s = %q, want an error", mount, got)
		}
	}
	if _, ok := (CgroupIDs{Mount: "/sys/fs/cgroup"}).ID("../../etc"); ok {
		t.Error("a path out of the mount has an id")
	}
}
