package coverage

import (
	"path"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// cronSlack: a cron job starts within the minute of its elapse.
const cronSlack = time.Minute

// maxJobsPerFile bounds the jobs read from one crontab (a user writes
// hers): each costs a schedule search per learning run.
const maxJobsPerFile = 1000

// cronEntry is one job line of a crontab.
type cronEntry struct {
	file    string
	line    int
	spec    string // the time fields as written
	user    string
	command string
	sched   schedule
	err     error
}

// runPartsDirs are the directories of scripts cron and anacron run.
var runPartsDirs = []string{"cron.hourly", "cron.daily", "cron.weekly", "cron.monthly", "cron.yearly"}

// cronJobs lists the jobs of anacron, the system crontab, /etc/cron.d and
// the users' crontabs.
func (s *scanner) cronJobs() []job {
	driven := map[string]bool{} // run-parts directories some line runs
	s.crond = s.cronDaemon()
	out := s.anacronJobs(driven)
	out = append(out, s.crontabJobs(s.o.Crontab, "", driven)...)
	names, err := s.fs.list(s.o.CronD)
	if err != nil {
		s.note("%s: %v", s.o.CronD, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, ".") {
			continue
		}
		if !runPartsName(n) {
			s.note("%s: cron ignores files whose names have other characters than letters, digits, _ and -", path.Join(s.o.CronD, n))
			continue
		}
		out = append(out, s.crontabJobs(path.Join(s.o.CronD, n), "", driven)...)
	}
	for _, dir := range s.o.UserCrontabs {
		users, err := s.fs.list(dir)
		if err != nil {
			s.note("%s: %v", dir, err)
		}
		for _, u := range users {
			if !strings.HasPrefix(u, ".") && !strings.HasPrefix(u, "tmp.") {
				out = append(out, s.crontabJobs(path.Join(dir, u), u, driven)...)
			}
		}
	}
	return append(out, s.undriven(driven)...)
}

// crontabJobs reads one crontab: a system one (owner "": each line names
// its user) or a user's.
func (s *scanner) crontabJobs(file, owner string, driven map[string]bool) []job {
	data, err := s.fs.read(file, false)
	if err != nil {
		if s.fs.exists(file) {
			s.note("%s: %v", file, err)
		}
		return nil
	}
	var out []job
	for i, line := range strings.Split(string(data), "\n") {
		e, ok := parseCronLine(line, owner == "", s.loc)
		if !ok {
			continue
		}
		if len(out) >= maxJobsPerFile {
			s.note("%s: more than %d jobs; the lines from %d on are left out", file, maxJobsPerFile, i+1)
			break
		}
		e.file, e.line = file, i+1
		if owner != "" {
			e.user = owner
		}
		out = append(out, s.cronEntryJobs(e, driven)...)
	}
	return out
}

var envLine = regexp.MustCompile(`^\s*("[^"]*"|'[^']*'|[A-Za-z_][A-Za-z0-9_]*)\s*=`)

// parseCronLine reads a crontab line; ok is false for blank lines,
// comments and variable settings.
func parseCronLine(line string, system bool, loc *time.Location) (e cronEntry, ok bool) {
	line = strings.TrimRight(line, "\r")
	trimmed := strings.TrimLeft(line, " \t")
	if trimmed == "" || trimmed[0] == '#' || envLine.MatchString(trimmed) {
		return e, false
	}
	n := 5
	if strings.HasPrefix(trimmed, "@") {
		n = 1
	}
	if system {
		n++
	}
	fields, rest := cutFields(trimmed, n)
	if len(fields) < n || rest == "" {
		e.spec, e.err = trimmed, errf("not a crontab line (%d time fields, %sa command)", n, map[bool]string{true: "a user, ", false: ""}[system])
		return e, true
	}
	timeFields := fields
	if system {
		timeFields, e.user = fields[:n-1], fields[n-1]
	}
	e.spec = strings.Join(timeFields, " ")
	e.command = cronCommand(rest)
	e.sched, e.err = parseCronSchedule(timeFields, loc)
	return e, true
}

// cutFields splits off n blank-separated fields and returns the rest.
func cutFields(s string, n int) ([]string, string) {
	var fields []string
	for len(fields) < n {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			end = len(s)
		}
		fields = append(fields, s[:end])
		s = s[end:]
	}
	return fields, strings.TrimSpace(s)
}

// cronCommand is the command of a line: up to its first unescaped %
// (what follows is the job's input), with \% unescaped.
func cronCommand(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '%':
			b.WriteByte('%')
			i++
		case s[i] == '%':
			return strings.TrimSpace(b.String())
		default:
			b.WriteByte(s[i])
		}
	}
	return strings.TrimSpace(b.String())
}

var (
	runPartsRe = regexp.MustCompile(`(?:^|[\s;&|({])run-parts((?:\s+-{1,2}[A-Za-z][\w-]*(?:=\S+)?)*)\s+(/[^\s;&|)}'"]+)`)
	guardRe    = regexp.MustCompile(`(?:test|\[)\s+-x\s+(/\S+?)\s*\]?\s*\|\|`)
)

// runParts finds "run-parts DIR" in a command, and a "test -x PROGRAM ||"
// before it that makes the line give way to that program (anacron).
func runParts(command string) (dir, guard string) {
	m := runPartsRe.FindStringSubmatch(command)
	if m == nil || strings.Contains(m[1], "--list") || strings.Contains(m[1], "--test") {
		return "", ""
	}
	if g := guardRe.FindStringSubmatch(command); g != nil && strings.Index(command, g[0]) < strings.Index(command, m[0]) {
		guard = g[1]
	}
	return path.Clean(m[2]), guard
}

// cronEntryJobs makes the jobs of a crontab line: itself, or the scripts
// of the directory it runs with run-parts.
func (s *scanner) cronEntryJobs(e cronEntry, driven map[string]bool) []job {
	name := e.file + ":" + itoa(e.line)
	j := s.cronJob(name, e.spec, e.user, e.command, e.sched)
	if e.err != nil {
		j.State, j.Counted = "invalid", false
		j.Notes = append(j.Notes, "cron skips this line: "+e.err.Error())
		return []job{j}
	}
	dir, guard := runParts(e.command)
	if dir == "" {
		return []job{j}
	}
	if guard != "" && s.fs.exists(guard) {
		// "test -x /usr/sbin/anacron || run-parts ...": anacron runs it.
		return nil
	}
	driven[dir] = true
	var out []job
	for _, script := range s.scripts(dir) {
		sj := s.cronJob(script, e.spec+" (run-parts "+dir+", "+name+")", e.user, script, e.sched)
		out = append(out, sj)
	}
	return out
}

// cronJob is a job run by cron on schedule sched.
func (s *scanner) cronJob(name, spec, user, command string, sched schedule) job {
	j := job{Job: Job{Name: name, Kind: "cron", Schedule: spec, Command: command, User: user,
		State: "scheduled", Counted: true, Destinations: []string{}}, sched: sched, slack: cronSlack, infer: s.o.Cron, uid: -1}
	j.process = processName(command)
	switch {
	case s.crond == "":
		j.State, j.Counted = "no-daemon", false
	case !s.o.Cron:
		j.Counted = false
		j.Notes = append(j.Notes, "no cron daemon runs: it does not run")
	case s.o.Systemd && skipsUnderSystemd(command):
		j.State, j.Counted = "idle", false
		j.Notes = append(j.Notes, "it does nothing while systemd runs (it tests /run/systemd/system): a timer does its work")
	}
	j.infer = j.Counted
	if uid, ok := s.uidOf(user); ok {
		j.uid, j.UID = int64(uid), &uid
	}
	if _, boot := sched.(rebootSchedule); boot {
		j.Notes = append(j.Notes, "@reboot: it runs when cron starts, at boot")
	}
	if sched != nil {
		if next := sched.Next(s.o.Now); !next.IsZero() {
			due := next.Add(cronSlack)
			j.NextRun, j.DueBy = &next, &due
		} else if _, boot := sched.(rebootSchedule); !boot {
			j.State, j.Counted, j.infer = "never", false, false
			j.Notes = append(j.Notes, "its schedule never comes (a day no month has?)")
		}
	}
	return j
}

// processName is the name the kernel gives the process of a command: its
// program's base name, cut as a comm (commOf).
func processName(command string) string {
	for _, f := range strings.Fields(command) {
		if strings.Contains(f, "=") && !strings.HasPrefix(f, "/") {
			continue // VAR=value before the program
		}
		return commOf(path.Base(f))
	}
	return ""
}

// runPartsName: run-parts (as cron calls it) runs only files named with
// letters, digits, _ and -.
func runPartsName(n string) bool {
	return n != "" && strings.IndexFunc(n, func(r rune) bool {
		return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) || r == '_' || r == '-')
	}) < 0
}

// scripts lists what run-parts runs in dir: executable files with
// run-parts names; the others are noted.
func (s *scanner) scripts(dir string) []string {
	names, err := s.fs.list(dir)
	if err != nil {
		s.note("%s: %v", dir, err)
	}
	var out []string
	for _, n := range names {
		p := path.Join(dir, n)
		fi, err := s.fs.stat(p)
		switch {
		case strings.HasPrefix(n, "."):
		case err != nil || !fi.Mode().IsRegular():
		case !runPartsName(n):
			s.note("%s: run-parts skips it (a name with other characters than letters, digits, _ and -)", p)
		case fi.Mode().Perm()&0o111 == 0:
			s.note("%s: run-parts skips it (not executable)", p)
		default:
			out = append(out, p)
		}
	}
	return out
}

// undriven lists the scripts of the standard run-parts directories that
// no crontab or anacrontab line runs: they never run.
func (s *scanner) undriven(driven map[string]bool) []job {
	var out []job
	for _, d := range runPartsDirs {
		dir := path.Join(path.Dir(s.o.Crontab), d)
		if driven[dir] {
			continue
		}
		for _, script := range s.scripts(dir) {
			j := s.cronJob(script, "none", "root", script, nil)
			j.State, j.Counted = "unscheduled", false
			j.Notes = append(j.Notes, "no crontab or anacrontab line runs "+dir+": it never runs")
			out = append(out, j)
		}
	}
	return out
}

// cronDaemons are where cron daemons are installed (Vixie cron, cronie,
// busybox, fcron, dcron).
var cronDaemons = []string{"/usr/sbin/cron", "/usr/sbin/crond", "/usr/bin/crond", "/sbin/crond", "/usr/sbin/fcron", "/usr/bin/fcron"}

// cronDaemon returns the installed cron daemon; without one, crontabs
// (which packages install anyway) never run.
func (s *scanner) cronDaemon() string {
	for _, p := range cronDaemons {
		if s.fs.exists(p) {
			return p
		}
	}
	s.note("no cron daemon is installed (%s): the crontabs' jobs never run", strings.Join(cronDaemons, ", "))
	return ""
}

// systemdGuard matches the Debian idiom of a cron job that gives way to
// its systemd timer: "test -e /run/systemd/system || ..." or
// "[ ! -d /run/systemd/system ] && ...".
var systemdGuard = regexp.MustCompile(`(?:test|\[)\s+-[de]\s+/run/systemd/system/?\s*\]?\s*\|\||\\?!\s*-[de]\s+/run/systemd/system\b`)

func skipsUnderSystemd(command string) bool { return systemdGuard.MatchString(command) }
