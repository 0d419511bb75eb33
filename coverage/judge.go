package coverage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/user"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egresskit/egress/store"
)

// maxDestinations bounds the destinations a job lists.
const maxDestinations = 20

// judge sets a job's last run, and whether the soak saw it: a recorded
// trigger inside a learning run, its service's cgroup among the flows, or
// (its scheduler running) an elapse inside a learning run.
// The job's connections are known (connections).
func (s *scanner) judge(j *job) {
	if !j.last.IsZero() {
		at := j.last
		j.LastRun, j.LastRunFrom = &at, j.lastFrom
	}
	if j.infer && j.sched != nil {
		if e := lastElapse(j.sched, s.o.Now); !e.IsZero() && (j.LastRun == nil || e.After(*j.LastRun)) {
			j.LastRun, j.LastRunFrom = &e, "schedule"
		}
	}
	switch {
	case !j.last.IsZero() && s.inRun(j.last, j.cgroup):
		j.SeenDuringSoak, j.SeenBy = true, j.lastFrom
	case j.Connected && j.cgroup != "":
		j.SeenDuringSoak, j.SeenBy = true, "connections"
	case j.infer && j.sched != nil && s.elapsedInRun(j.sched, j.slack, j.cgroup):
		j.SeenDuringSoak, j.SeenBy = true, "schedule"
	}
}

// inRun says whether t lies inside a learning run that watched cgroup.
func (s *scanner) inRun(t time.Time, cgroup string) bool {
	for _, r := range s.o.Runs {
		if !t.Before(r.Start) && !t.After(r.End) && s.watches(r, cgroup) {
			return true
		}
	}
	return false
}

// elapsedInRun says whether an elapse of sched, and slack after it, lies
// inside a learning run that watched cgroup.
func (s *scanner) elapsedInRun(sched schedule, slack time.Duration, cgroup string) bool {
	for _, r := range s.o.Runs {
		if !s.watches(r, cgroup) {
			continue
		}
		if e := sched.Next(r.Start.Add(-time.Nanosecond)); !e.IsZero() && !e.Add(slack).After(r.End) && !e.After(s.o.Now) {
			return true
		}
	}
	return false
}

// watches says whether a learning run saw the connections of cgroup (a
// path from the root of the hierarchy; "" for a job whose cgroup is not
// known, which only a run of the whole host sees). A run attached to a
// child cgroup sees only what runs inside it.
func (s *scanner) watches(r store.Run, cgroup string) bool {
	mount := strings.TrimSuffix(s.o.CgroupMount, "/")
	if mount == "" || r.Cgroup == "" {
		return true // unknown: taken as the whole host
	}
	rel, ok := strings.CutPrefix(strings.TrimSuffix(r.Cgroup, "/"), mount)
	switch {
	case ok && rel == "":
		return true
	case !ok || cgroup == "" || !strings.HasPrefix(rel, "/"):
		return false
	}
	return strings.HasPrefix(cgroup+"/", rel+"/")
}

// narrowRuns notes the learning runs that watched only part of the host.
func (s *scanner) narrowRuns() {
	for _, r := range s.o.Runs {
		if !s.watches(r, "") {
			s.note("learning run %d watched only %s: it sees the jobs that run inside it", r.ID, r.Cgroup)
		}
	}
}

// lastElapse returns the last elapse of sched at or before now: it looks
// back a minute, an hour, a day, 32 days, a year, and walks forward from
// the first window that holds one.
func lastElapse(sched schedule, now time.Time) time.Time {
	for _, back := range []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour} {
		e := sched.Next(now.Add(-back))
		if e.IsZero() || e.After(now) {
			continue
		}
		for range 100000 {
			n := sched.Next(e)
			if n.IsZero() || n.After(now) {
				break
			}
			e = n
		}
		return e
	}
	return time.Time{}
}

// connections finds the flows of the jobs, in one pass over the flows (a
// million flows are read once, not once a job): a timer's by its
// service's cgroup path (exactly: a user's own unit of the same name
// lives elsewhere in the tree), a cron job's by its process name under
// its user.
func (s *scanner) connections(jobs []job) {
	var active []*job
	for i := range jobs {
		j := &jobs[i]
		if j.cgroup != "" {
			j.Match = "cgroup " + j.cgroup
		} else if j.process != "" && j.uid >= 0 {
			j.Match = fmt.Sprintf("process %s of uid %d", j.process, j.uid)
		} else {
			continue
		}
		active = append(active, j)
	}
	if len(active) == 0 {
		return
	}
	// The jobs by what they match, so a flow looks its cgroups and
	// processes up instead of trying every job: a user writes up to 1000
	// jobs in her crontab, and makes as many flows as she likes, of up to
	// 32 processes each.
	byCgroup, byProcess := map[string][]int{}, map[processKey][]int{}
	for i, j := range active {
		if j.cgroup != "" {
			byCgroup[j.cgroup] = append(byCgroup[j.cgroup], i)
		} else {
			k := processKey{j.uid, j.process}
			byProcess[k] = append(byProcess[k], i)
		}
	}
	var hits []int
	for i := range s.o.Flows {
		f := &s.o.Flows[i]
		hits = hits[:0]
		for _, c := range f.Cgroups {
			hits = append(hits, byCgroup[c]...)
		}
		if len(byProcess) > 0 {
			uid := int64(f.UID)
			for _, p := range f.Processes {
				hits = append(hits, byProcess[processKey{uid, commOf(p)}]...)
			}
			for _, c := range f.Comms {
				hits = append(hits, byProcess[processKey{uid, c.Comm}]...)
			}
		}
		if len(hits) == 0 {
			continue
		}
		slices.Sort(hits) // the jobs' order, each once
		for _, h := range slices.Compact(hits) {
			j := active[h]
			j.Connected = true
			if len(j.Destinations) < maxDestinations {
				j.Destinations = append(j.Destinations, destination(*f))
			}
		}
	}
}

// processKey is what a cron job's connections are found by: its user and
// its process name (at most store.CommLen bytes).
type processKey struct {
	uid  int64
	name string
}

// commOf is the name a process of executable exe matches a job by:
// exe's name cut to store.CommLen, as the kernel cuts a process's name
// (store.SameName of a name of at most CommLen).
func commOf(exe string) string {
	if len(exe) > store.CommLen {
		return exe[:store.CommLen]
	}
	return exe
}

func destination(f store.Flow) string {
	d := fmt.Sprintf("%s/%s", store.ProtoName(f.Proto), netJoin(f.IP.String(), f.Port))
	if len(f.Hostnames) > 0 {
		d += " (" + strings.Join(f.Hostnames, ",") + ")"
	}
	return d
}

func netJoin(ip string, port uint16) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + itoa(int(port))
	}
	return ip + ":" + itoa(int(port))
}

// uidOf resolves a user name: root is 0, others come from the root's
// /etc/passwd, or (on this host itself) from the system's user database.
func (s *scanner) uidOf(name string) (uint32, bool) {
	if name == "root" {
		return 0, true
	}
	if s.users == nil {
		s.users = map[string]uint32{}
		data, _ := s.fs.read("/etc/passwd", false)
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f := strings.Split(sc.Text(), ":")
			if len(f) >= 3 {
				if n, err := strconv.ParseUint(f[2], 10, 32); err == nil {
					s.users[f[0]] = uint32(n)
				}
			}
		}
	}
	if uid, ok := s.users[name]; ok {
		return uid, true
	}
	if s.o.Root == "" || s.o.Root == "/" {
		if u, err := user.Lookup(name); err == nil {
			if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
				return uint32(n), true
			}
		}
	}
	return 0, false
}

func itoa(n int) string { return strconv.Itoa(n) }

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// check refuses options a scan cannot use.
func (o *Options) check() error {
	if o.Now.IsZero() {
		return fmt.Errorf("coverage: no time to scan at")
	}
	paths := append([]string{o.TimerStamps, o.Crontab, o.CronD, o.Anacrontab, o.AnacronSpool}, o.UnitDirs...)
	paths = append(paths, o.UserCrontabs...)
	for _, p := range paths {
		if p == "" || !path.IsAbs(p) {
			return fmt.Errorf("coverage: %q is not an absolute path", p)
		}
	}
	if o.Root != "" {
		if fi, err := os.Stat(o.Root); err != nil || !fi.IsDir() {
			return fmt.Errorf("coverage_root %s: not a directory", o.Root)
		}
	}
	return nil
}
