// Package coverage says what a soak has not seen yet: it lists the
// scheduled jobs of a host (systemd timers from the unit files, cron and
// anacron jobs, user crontabs), when each ran last and runs next, and
// whether one of its runs fell inside a learning run, so that the learner
// saw what it reaches. Convergence ("no new destination for 72 hours")
// cannot see a weekly job that has not run yet; coverage can, and says
// how long the soak should last: until the last job not seen yet is due.
//
// Everything is read from files under a root directory (default /), so a
// copy of a host or a test fixture reads like the host itself. The
// elapses of calendar events are computed here (ParseCalendar, Next); the
// tests check them against systemd-analyze calendar.
package coverage

import (
	"cmp"
	"slices"
	"time"

	"github.com/egresskit/egress/store"
)

// Options say where the jobs are and what the soak was.
type Options struct {
	// Root is the directory the paths below are read in ("" or "/": this
	// host).
	Root string
	// UnitDirs are systemd's unit directories, highest priority first.
	UnitDirs []string
	// TimerStamps holds the stamp files of persistent timers: the
	// modification time of stamp-NAME.timer is its last trigger.
	TimerStamps string
	// Crontab is the system crontab, CronD its directory of crontabs with
	// a user field, Anacrontab and AnacronSpool anacron's table and time
	// stamps, UserCrontabs the directories of users' crontabs (one file
	// per user, named after the user).
	Crontab, CronD, Anacrontab, AnacronSpool string
	UserCrontabs                             []string

	// Now is the time of the scan; Location the zone of calendar events
	// and crontabs that name none (nil: time.Local).
	Now      time.Time
	Location *time.Location
	// Boot is when the host booted (zero: unknown), for OnBootSec= and
	// the other monotonic timers.
	Boot time.Time
	// Systemd and Cron say whether those schedulers run: then an elapse
	// of a job's schedule is a run of the job; else their jobs do not run
	// and the verdict does not wait for them (anacron's jobs, which
	// anacron's timer or cron start, are counted either way).
	Systemd, Cron bool
	// Triggers are the timers' last triggers as systemd reports them
	// (D-Bus), by timer name; they win over the stamp files.
	Triggers map[string]time.Time

	// Runs and Flows are the store's learning runs and flows.
	Runs  []store.Run
	Flows []store.Flow
	// CgroupMount is where the cgroup v2 hierarchy is mounted: a run
	// whose cgroup is below it watched only that part of the host. ""
	// takes every run as watching the whole host.
	CgroupMount string
}

// DefaultOptions are the standard places of a Debian, Ubuntu, Fedora or
// RHEL host.
func DefaultOptions() Options {
	return Options{
		Root:         "/",
		UnitDirs:     slices.Clone(DefaultUnitDirs),
		TimerStamps:  "/var/lib/systemd/timers",
		Crontab:      "/etc/crontab",
		CronD:        "/etc/cron.d",
		Anacrontab:   "/etc/anacrontab",
		AnacronSpool: "/var/spool/anacron",
		UserCrontabs: []string{"/var/spool/cron/crontabs"},
	}
}

// DefaultUnitDirs are systemd's system unit directories, highest priority
// first (systemd.unit(5)).
var DefaultUnitDirs = []string{
	"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
	"/usr/lib/systemd/system", "/lib/systemd/system",
}

// Job is one scheduled job and what the soak saw of it.
type Job struct {
	// Name: a timer's unit name, or where a cron job is defined
	// (FILE:LINE, or the script of a run-parts directory).
	Name string `json:"name"`
	Kind string `json:"kind"` // "timer" or "cron"
	// Schedule as written (OnCalendar=, OnBootSec=..., the cron fields or
	// the anacron period).
	Schedule string `json:"schedule"`
	Unit     string `json:"unit,omitempty"`    // the service a timer starts
	Command  string `json:"command,omitempty"` // what runs
	User     string `json:"user,omitempty"`
	// UID is the user's: the cron user field, a service's User= (root
	// without one); nil when not known (DynamicUser=, no such user).
	UID *uint32 `json:"uid,omitempty"`
	// State: enabled, disabled or masked (timers); scheduled, or
	// unscheduled for a run-parts directory nothing runs (cron); invalid.
	State string `json:"state"`
	// Counted: the job runs on its own, so the verdict waits for it.
	Counted bool `json:"counted"`
	// LastRun is its last known run, and LastRunFrom where that comes
	// from: dbus, stamp (a persistent timer's stamp file), anacron (its
	// time stamp), or schedule (its last elapse, its scheduler running).
	LastRun     *time.Time `json:"last_run"`
	LastRunFrom string     `json:"last_run_from,omitempty"`
	// NextRun is its next elapse and DueBy the latest it starts then
	// (after a timer's RandomizedDelaySec= and AccuracySec=).
	NextRun *time.Time `json:"next_run"`
	DueBy   *time.Time `json:"due_by"`
	// SeenDuringSoak: it ran while a learning run recorded, at least
	// once; SeenBy says how that is known (dbus, stamp, anacron,
	// schedule, connections).
	SeenDuringSoak bool   `json:"seen_during_soak"`
	SeenBy         string `json:"seen_by,omitempty"`
	// Connected: the learner saw the job's service cgroup (a timer) or
	// its process under its user (cron) connect; Match says which, and
	// Destinations lists what it reached (at most maxDestinations).
	Connected    bool     `json:"connected"`
	Match        string   `json:"match,omitempty"`
	Destinations []string `json:"destinations"`
	Notes        []string `json:"notes,omitempty"`
}

// Coverage is the scan of a host's scheduled jobs against its soak.
type Coverage struct {
	Now time.Time `json:"now"`
	// SoakStart is the start of the first learning run kept in the store.
	SoakStart    *time.Time `json:"soak_start"`
	LearningRuns int        `json:"learning_runs"`
	Jobs         []Job      `json:"jobs"`
	Verdict      Verdict    `json:"verdict"`
	// Notes are what the scan could not read or chose to leave out.
	Notes []string `json:"notes"`
}

// Verdict says whether the soak covers every job, or how long it should
// last.
type Verdict struct {
	// Covered: every counted job ran while learning.
	Covered bool `json:"covered"`
	Jobs    int  `json:"jobs"`   // counted jobs
	Unseen  int  `json:"unseen"` // counted jobs not seen yet
	// SoakUntil is the latest DueBy of the jobs not seen yet, and LastDue
	// the job due then.
	SoakUntil *time.Time `json:"soak_until"`
	LastDue   string     `json:"last_due,omitempty"`
	// NoNextRun are the jobs not seen yet that no wait will bring (they
	// run at boot, or their next run cannot be told).
	NoNextRun []string `json:"no_next_run"`
	Text      string   `json:"text"`
}

// schedule gives a job's elapses: the first strictly after t, or the zero
// time when none is known.
type schedule interface {
	Next(t time.Time) time.Time
}

// job is a Job with what judging it needs.
type job struct {
	Job
	sched schedule
	// slack: how long after an elapse the job may start.
	slack time.Duration
	// last: a recorded trigger (D-Bus, stamp, anacron), and from where.
	last     time.Time
	lastFrom string
	// infer: its scheduler runs, so each elapse was a run.
	infer bool
	// cgroup (a timer's service) or process and uid (a cron job) to find
	// among the flows.
	cgroup  string
	process string
	uid     int64
}

type scanner struct {
	o     Options
	fs    files
	loc   *time.Location
	notes []string
	users map[string]uint32
	crond string // the cron daemon installed, if any
}

// Scan lists the scheduled jobs and judges the soak. It fails only on
// bad options: what it cannot read becomes a note.
func Scan(o Options) (*Coverage, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	s := &scanner{o: o, fs: files{root: o.Root}, loc: cmp.Or(o.Location, time.Local)}
	jobs := append(s.timers(), s.cronJobs()...)
	c := &Coverage{Now: o.Now, LearningRuns: len(o.Runs), Jobs: []Job{}, Notes: []string{}}
	if start := soakStart(o.Runs); !start.IsZero() {
		c.SoakStart = &start
	}
	s.narrowRuns()
	s.connections(jobs)
	for i := range jobs {
		s.judge(&jobs[i])
		c.Jobs = append(c.Jobs, jobs[i].Job)
	}
	slices.SortStableFunc(c.Jobs, func(a, b Job) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind)*-1, cmp.Compare(a.Name, b.Name))
	})
	c.Notes = append(c.Notes, s.notes...)
	c.Verdict = verdict(c)
	return c, nil
}

func (s *scanner) note(format string, args ...any) {
	if len(s.notes) < maxNotes {
		s.notes = append(s.notes, sanitize(sprintf(format, args...)))
	}
}

// maxNotes bounds the notes of one scan.
const maxNotes = 200

func soakStart(runs []store.Run) time.Time {
	var start time.Time
	for _, r := range runs {
		if start.IsZero() || r.Start.Before(start) {
			start = r.Start
		}
	}
	return start
}
