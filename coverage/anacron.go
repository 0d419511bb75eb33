package coverage

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// anacronEntry is one job line of the anacrontab.
type anacronEntry struct {
	period  int // days; 0 with monthly or yearly set
	monthly bool
	yearly  bool
	delay   time.Duration
	id      string
	command string
	text    string // the period as written
}

// anacronJobs lists anacron's jobs (the scripts of the directories it
// runs with run-parts), and marks those directories as driven. Anacron
// records each job's last run in its time stamp file.
func (s *scanner) anacronJobs(driven map[string]bool) []job {
	data, err := s.fs.read(s.o.Anacrontab, false)
	if err != nil {
		if s.fs.exists(s.o.Anacrontab) {
			s.note("%s: %v", s.o.Anacrontab, err)
		}
		return nil
	}
	var out []job
	for i, line := range strings.Split(string(data), "\n") {
		e, ok, err := parseAnacronLine(line)
		if !ok {
			continue
		}
		name := s.o.Anacrontab + ":" + itoa(i+1)
		if err != nil {
			s.note("%s: anacron skips this line: %v", name, err)
			continue
		}
		dir, _ := runParts(e.command)
		if dir == "" {
			out = append(out, s.anacronJob(name, e, e.command))
			continue
		}
		driven[dir] = true
		for _, script := range s.scripts(dir) {
			out = append(out, s.anacronJob(script, e, script))
		}
	}
	return out
}

func parseAnacronLine(line string) (e anacronEntry, ok bool, err error) {
	t := strings.TrimSpace(line)
	if t == "" || t[0] == '#' || envLine.MatchString(t) {
		return e, false, nil
	}
	f, rest := cutFields(t, 3)
	if len(f) < 3 || rest == "" {
		return e, true, fmt.Errorf("want: period delay job-identifier command")
	}
	e.text, e.id, e.command = f[0], f[2], rest
	switch strings.ToLower(f[0]) {
	case "@daily":
		e.period = 1
	case "@weekly":
		e.period = 7
	case "@monthly":
		e.monthly = true
	case "@yearly", "@annually":
		e.yearly = true
	default:
		n, err := strconv.Atoi(f[0])
		if err != nil || n < 1 || n > 36500 {
			return e, true, fmt.Errorf("period %q is not a number of days or @daily, @weekly, @monthly, @yearly", f[0])
		}
		e.period = n
	}
	d, err := strconv.Atoi(f[1])
	if err != nil || d < 0 || d > 100000 {
		return e, true, fmt.Errorf("delay %q is not a number of minutes", f[1])
	}
	e.delay = time.Duration(d) * time.Minute
	if strings.ContainsAny(e.id, "/") || e.id == ".." || e.id == "." {
		return e, true, fmt.Errorf("job identifier %q has a /", e.id)
	}
	return e, true, nil
}

// after is the date a job that last ran on day last is due again.
func (e anacronEntry) after(last time.Time) time.Time {
	switch {
	case e.monthly:
		return last.AddDate(0, 1, 0)
	case e.yearly:
		return last.AddDate(1, 0, 0)
	}
	return last.AddDate(0, 0, e.period)
}

// anacronJob: anacron starts the job delay after its own start, on the
// first of its starts (hourly, and at boot, on Debian) once period days
// passed since the day of its time stamp. NextRun is the earliest it can
// start, DueBy the end of that day plus the delay.
func (s *scanner) anacronJob(name string, e anacronEntry, command string) job {
	period := e.text
	if e.period > 0 {
		period = fmt.Sprintf("every %d day(s)", e.period)
	}
	j := job{Job: Job{Name: name, Kind: "cron", Command: command, User: "root", State: "scheduled", Counted: true, Destinations: []string{},
		Schedule: fmt.Sprintf("anacron %s: %s, %d min after anacron starts", e.id, period, int(e.delay.Minutes()))}, uid: 0, slack: cronSlack}
	j.process = processName(command)
	j.UID = new(uint32) // anacron runs its jobs as root
	stamp := path.Join(s.o.AnacronSpool, e.id)
	day, mtime, err := s.anacronStamp(stamp)
	now := s.o.Now.In(s.loc)
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, s.loc)
	due := today
	if err != nil {
		j.Notes = append(j.Notes, fmt.Sprintf("no time stamp %s (%v): anacron runs it at its next start", stamp, err))
	} else {
		j.last, j.lastFrom = mtime, "anacron"
		if d := e.after(day); d.After(today) {
			due = d
		}
	}
	next := due.Add(e.delay)
	if next.Before(s.o.Now) {
		next = s.o.Now
	}
	dueBy := due.AddDate(0, 0, 1).Add(e.delay)
	j.NextRun, j.DueBy = &next, &dueBy
	return j
}

// anacronStamp reads a time stamp file: the day (YYYYMMDD) of the job's
// last start; its modification time is the start itself when it falls
// on that day.
func (s *scanner) anacronStamp(p string) (day, at time.Time, err error) {
	data, err := s.fs.read(p, false)
	if err != nil {
		return day, at, err
	}
	day, err = time.ParseInLocation("20060102", strings.TrimSpace(string(data)), s.loc)
	if err != nil {
		return day, at, fmt.Errorf("not a date: %q", strings.TrimSpace(string(data)))
	}
	at = day
	if fi, err := s.fs.stat(p); err == nil {
		m := fi.ModTime().In(s.loc)
		if m.Year() == day.Year() && m.YearDay() == day.YearDay() {
			at = m
		}
	}
	return day, at, nil
}
