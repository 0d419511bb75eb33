package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/lab"
)

// waitFor is how long a test waits for a signal before it gives up: a
// bound against hanging, never a speed requirement.
const waitFor = 2 * time.Minute

// guardLog is the log of generation n's guard.
func guardLog(t *testing.T, l *rolloutLab, n uint64) string {
	t.Helper()
	data, _ := os.ReadFile(filepath.Join(filepath.Dir(l.db), fmt.Sprintf("guard-%d.log", n)))
	return string(data)
}

// listing is our table in the client namespace, canonical.
func (l *rolloutLab) listing(t *testing.T) string {
	t.Helper()
	return lab.ListTable(t, l.pair.Client, "egress")
}

// reboot does to the lab what a reboot does to a host: the guards die and
// nftables forgets our table.
func (l *rolloutLab) reboot(t *testing.T) {
	t.Helper()
	gens, _ := l.history(t)
	for _, g := range gens {
		if g.GuardPID > 0 {
			_ = syscall.Kill(g.GuardPID, syscall.SIGKILL)
			waitUntil(t, waitFor, "the guard to die", func() bool { return gone(g.GuardPID) })
		}
	}
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "delete", "table", "inet", "egress")
	if st := l.status(t); st.Present {
		t.Fatal("the table survived the simulated reboot")
	}
}

// gone: no such process, or a zombie.
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z'
}
