//go:build linux

// Package cgroupbpf is the kernel plumbing the learner and the DNS
// follower share to put eBPF programs on a cgroup v2 directory: finding
// the cgroup2 mount and a cgroup's id, depth and path, loading a
// collection (with the verifier's log when it refuses), attaching programs
// to a cgroup, reading a ring buffer, and the boot clock of the programs'
// timestamps.
package cgroupbpf

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Mount returns where the cgroup v2 hierarchy is mounted, read from
// /proc/mounts (it may be /sys/fs/cgroup, /sys/fs/cgroup/unified or
// anywhere else).
func Mount() (string, error) {
	return mountFrom("/proc/mounts")
}

func mountFrom(mounts string) (string, error) {
	f, err := os.Open(mounts)
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return unescapeMount(fields[1]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	return "", fmt.Errorf("find cgroup2 mount: no cgroup2 file system in %s (mount one, e.g. mount -t cgroup2 none /sys/fs/cgroup)", mounts)
}

// unescapeMount undoes the octal escapes of /proc/mounts (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Check verifies that path is a directory of a cgroup v2 file system.
func Check(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("check cgroup %s: %w", path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("check cgroup %s: not a cgroup v2 directory", path)
	}
	return nil
}

// ID returns the id of a cgroup v2 directory: its inode number, the
// value bpf_get_current_cgroup_id() and nftables' socket cgroupv2 report.
func ID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	return st.Ino, nil
}

// Level is the depth of a cgroup below the cgroup2 root (0 for the root).
func Level(path string) (int, error) {
	root, err := Mount()
	if err != nil {
		return 0, err
	}
	rel, err := filepath.Rel(root, filepath.Clean(path))
	if err != nil || strings.HasPrefix(rel, "..") {
		return 0, fmt.Errorf("cgroup %s is not under the cgroup2 mount %s", path, root)
	}
	if rel == "." {
		return 0, nil
	}
	return len(strings.Split(rel, string(filepath.Separator))), nil
}

// Names turns cgroup ids into paths relative to the cgroup2 mount.
// Unknown ids trigger a rescan of the tree at most every rescanEvery.
type Names struct {
	mu          sync.Mutex
	root        string
	names       map[uint64]string
	lastScan    time.Time
	rescanEvery time.Duration
}

// NewNames scans the tree below root.
func NewNames(root string) *Names {
	c := &Names{root: root, names: map[uint64]string{}, rescanEvery: 2 * time.Second}
	c.scan()
	return c
}

func (c *Names) scan() {
	c.lastScan = time.Now()
	_ = filepath.WalkDir(c.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel := strings.TrimPrefix(p, c.root)
		if rel == "" {
			rel = "/"
		}
		c.names[st.Ino] = rel
		return nil
	})
}

// Name returns the cgroup path of id, or "cgroup-id:N" when it is gone.
func (c *Names) Name(id uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.names[id]; ok {
		return n
	}
	if time.Since(c.lastScan) >= c.rescanEvery {
		c.scan()
		if n, ok := c.names[id]; ok {
			return n
		}
	}
	return fmt.Sprintf("cgroup-id:%d", id)
}

// Attachment is a program for one hook of a cgroup.
type Attachment struct {
	Name    string
	Type    ebpf.AttachType
	Program *ebpf.Program
}

// Attach links each program to the cgroup v2 directory at path. On an
// error it detaches those it attached and returns no link.
func Attach(path string, as []Attachment) ([]link.Link, error) {
	var links []link.Link
	for _, a := range as {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: a.Type, Program: a.Program})
		if err != nil {
			for _, l := range links {
				_ = l.Close()
			}
			return nil, fmt.Errorf("attach %s to %s: %w", a.Name, path, err)
		}
		links = append(links, l)
	}
	return links, nil
}
