//go:build linux

package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Child creates the cgroup name below c (a stand-in for a unit such as
// "a.service"); t.Cleanup kills what runs in it and removes it, before c.
func (c *Cgroup) Child(t testing.TB, name string) *Cgroup {
	t.Helper()
	return newCgroupAt(t, filepath.Join(c.Path, name))
}

// Recreate removes the cgroup and creates it again, as systemd does when
// it restarts a unit: same path, a new id. Nothing may run in it.
func (c *Cgroup) Recreate(t testing.TB) {
	t.Helper()
	_ = c.fd.Close()
	if err := os.Remove(c.Path); err != nil {
		t.Fatalf("remove cgroup %s: %v", c.Path, err)
	}
	if err := os.Mkdir(c.Path, 0o755); err != nil {
		t.Fatalf("create cgroup %s again: %v", c.Path, err)
	}
	fd, err := os.Open(c.Path)
	if err != nil {
		t.Fatal(err)
	}
	c.fd = fd
}

// Rel is the cgroup's path relative to the cgroup2 mount, without the
// leading slash ("egress-test-1a2b/a.service").
func (c *Cgroup) Rel(t testing.TB) string {
	t.Helper()
	root, err := cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimPrefix(c.Path, root), "/")
}

// ListTableNsenter is ListTable read through nsenter, which keeps the
// host's /sys (ip netns exec mounts a fresh one, where nft cannot turn
// cgroup ids into paths).
func ListTableNsenter(t testing.TB, ns *Netns, table string) string {
	t.Helper()
	return CanonicalTable(MustRun(t, "nsenter", "--net="+ns.Path(), "nft", "list", "table", "inet", table))
}

// LoadNsenter loads an nft script file into ns through nsenter, so that
// nft resolves its cgroup paths under the host's /sys/fs/cgroup.
func LoadNsenter(t testing.TB, ns *Netns, file string) {
	t.Helper()
	MustRun(t, "nsenter", "--net="+ns.Path(), "nft", "-f", file)
}

// CgroupOf is an open cgroup directory made by the test itself, for As;
// the test removes it.
func CgroupOf(f *os.File) *Cgroup { return &Cgroup{Path: f.Name(), fd: f} }
