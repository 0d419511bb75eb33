//go:build linux

package coverage

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Detect fills in what this host tells: where its cgroup2 hierarchy is
// mounted (the learning runs' cgroups are below it) and, when o.Root is
// this host's, when it booted, whether systemd (PID 1) and a cron daemon
// run, and, from systemd over D-Bus, the timers' last triggers. For
// another root (a copy of a host) the schedulers are taken to run and the
// boot time stays unknown. What it cannot learn is returned as notes.
func Detect(ctx context.Context, o *Options) []string {
	var notes []string
	// The learning runs were on this host, whatever root the jobs come from.
	if m, err := cgroup2Mount("/proc/mounts"); err == nil {
		o.CgroupMount = m
	} else {
		notes = append(notes, err.Error()+": every learning run is taken to watch the whole host")
	}
	if o.Root != "" && o.Root != "/" {
		o.Systemd, o.Cron = true, true
		return append(notes, "reading the host under "+o.Root+": its schedulers are taken to run; its boot time is unknown")
	}
	if b, err := bootTime("/proc/stat"); err == nil {
		o.Boot = b
	} else {
		notes = append(notes, err.Error())
	}
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		o.Systemd = true
		tr, err := dbusTriggers(ctx)
		if err != nil {
			notes = append(notes, fmt.Sprintf("timers' last triggers from systemd: %v (stamp files only)", err))
		}
		o.Triggers = tr
	} else {
		notes = append(notes, "systemd is not running (no /run/systemd/system): timers do not elapse; last runs come from stamp files only")
	}
	o.Cron = cronRunning("/proc")
	if !o.Cron {
		notes = append(notes, "no cron daemon is running: crontab jobs do not run; anacron's time stamps still tell")
	}
	return notes
}

// bootTime reads btime from /proc/stat.
func bootTime(stat string) (time.Time, error) {
	f, err := os.Open(stat)
	if err != nil {
		return time.Time{}, fmt.Errorf("read boot time: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return time.Unix(n, 0), nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("read boot time: no btime in %s", stat)
}

// cronRunning looks for a cron daemon among the processes.
func cronRunning(proc string) bool {
	comms, _ := filepath.Glob(filepath.Join(proc, "[0-9]*", "comm"))
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		switch strings.TrimSpace(string(b)) {
		case "cron", "crond", "fcron", "dcron":
			return true
		}
	}
	return false
}

// dbusTriggers asks systemd for every timer's last trigger.
func dbusTriggers(ctx context.Context) (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := sddbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	units, err := conn.ListUnitsByPatternsContext(ctx, nil, []string{"*.timer"})
	if err != nil {
		return nil, fmt.Errorf("list timers: %w", err)
	}
	out := map[string]time.Time{}
	for _, u := range units {
		props, err := conn.GetUnitTypePropertiesContext(ctx, u.Name, "Timer")
		if err != nil {
			continue
		}
		if v, ok := props["LastTriggerUSec"].(uint64); ok && v > 0 && v < 1<<62 {
			out[u.Name] = time.UnixMicro(int64(v))
		}
	}
	return out, nil
}

// cgroup2Mount finds the cgroup2 mount in /proc/mounts (as learn does).
func cgroup2Mount(mounts string) (string, error) {
	data, err := os.ReadFile(mounts)
	if err != nil {
		return "", fmt.Errorf("find the cgroup2 mount: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[2] == "cgroup2" {
			return strings.ReplaceAll(f[1], `\040`, " "), nil
		}
	}
	return "", fmt.Errorf("find the cgroup2 mount: none in %s", mounts)
}
