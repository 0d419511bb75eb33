package coverage

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"
)

// timer is what a timer's unit files say.
type timer struct {
	calendars  []*Calendar
	monotonic  []monoValue
	persistent bool
	delay      time.Duration
	delayText  string
	accuracy   time.Duration
	unit       string
	schedule   []string // the settings as written, for the job's Schedule
	errs       []string
}

// monoValue is one monotonic setting: OnBootSec=15min.
type monoValue struct {
	key string
	d   time.Duration
}

var monotonicKeys = []string{"OnBootSec", "OnStartupSec", "OnActiveSec", "OnUnitActiveSec", "OnUnitInactiveSec"}

// defaultAccuracy is systemd's AccuracySec= default.
const defaultAccuracy = time.Minute

// timers lists every timer of the unit directories (and the instances of
// templates some .wants directory names) as jobs.
func (s *scanner) timers() []job {
	dirs := s.unitDirs()
	wanted := s.wantedUnits(dirs)
	names := map[string]bool{}
	for n := range wanted {
		if strings.HasSuffix(n, ".timer") {
			names[n] = true
		}
	}
	for _, d := range dirs {
		list, err := s.fs.list(d)
		if err != nil {
			s.note("unit directory %s: %v", d, err)
		}
		for _, n := range list {
			if strings.HasSuffix(n, ".timer") && !strings.Contains(n, "@.") { // not a template
				names[n] = true
			}
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	var out []job
	for _, n := range sorted {
		out = append(out, s.timerJob(n, dirs, wanted[n]))
	}
	return out
}

func (s *scanner) timerJob(name string, dirs []string, wanted bool) job {
	j := job{Job: Job{Name: name, Kind: "timer", State: "disabled", Destinations: []string{}}, uid: -1}
	if wanted {
		j.State = "enabled"
	}
	u, err := s.loadUnit(name, dirs)
	if errors.Is(err, errMasked) {
		j.State = "masked"
		j.Notes = append(j.Notes, "masked: it never runs")
		return j
	}
	if err != nil {
		j.State = "invalid"
		j.Notes = append(j.Notes, err.Error())
		return j
	}
	t := parseTimer(u)
	j.Schedule = strings.Join(t.schedule, "; ")
	j.Unit = t.unit
	j.Notes = append(j.Notes, t.errs...)
	if len(t.calendars) == 0 && len(t.monotonic) == 0 {
		j.State = "invalid"
		j.Notes = append(j.Notes, "no OnCalendar= nor OnBootSec=-like setting: it never elapses")
		return j
	}
	j.Counted = j.State == "enabled" && s.o.Systemd
	if !wanted {
		j.Notes = append(j.Notes, "not enabled (no .wants link): it runs only if started by hand")
	}
	if !s.o.Systemd {
		j.Notes = append(j.Notes, "systemd is not running: it does not elapse")
	}
	j.slack = t.delay + t.accuracy
	j.infer = j.Counted // an enabled timer elapses while systemd runs
	svc := s.service(t.unit, dirs)
	j.Command, j.User, j.cgroup = svc.exec, svc.user, serviceCgroup(t.unit, svc.slice)
	j.UID = s.serviceUID(svc)
	j.Notes = append(j.Notes, svc.notes...)
	s.timerTimes(&j, name, t)
	return j
}

// parseTimer applies a timer's settings in order; an empty OnCalendar= or
// On*Sec= resets them all, as in systemd.
func parseTimer(u *unitFile) timer {
	t := timer{accuracy: defaultAccuracy}
	for _, o := range u.opts {
		if o.Section != "Timer" {
			continue
		}
		v := strings.TrimSpace(o.Value)
		bad := func(err error) { t.errs = append(t.errs, fmt.Sprintf("%s=%s: %v (ignored)", o.Name, v, err)) }
		switch {
		case (o.Name == "OnCalendar" || slices.Contains(monotonicKeys, o.Name)) && v == "":
			t.calendars, t.monotonic, t.schedule = nil, nil, nil
		case o.Name == "OnCalendar":
			if c, err := ParseCalendar(v); err != nil {
				bad(err)
			} else {
				t.calendars = append(t.calendars, c)
				t.schedule = append(t.schedule, "OnCalendar="+v)
			}
		case slices.Contains(monotonicKeys, o.Name):
			if d, err := parseTimespan(v); err != nil {
				bad(err)
			} else {
				t.monotonic = append(t.monotonic, monoValue{o.Name, d})
				t.schedule = append(t.schedule, o.Name+"="+v)
			}
		case o.Name == "Persistent":
			if b, err := parseBool(v); err != nil {
				bad(err)
			} else {
				t.persistent = b
			}
		case o.Name == "RandomizedDelaySec" || o.Name == "AccuracySec":
			d, err := parseTimespan(v)
			if err != nil {
				bad(err)
			} else if o.Name == "AccuracySec" {
				t.accuracy = d
			} else {
				t.delay, t.delayText = d, v
			}
		case o.Name == "Unit":
			t.unit = specifiers(v, u.name)
		}
	}
	if t.unit == "" {
		t.unit = strings.TrimSuffix(u.name, ".timer") + ".service"
	}
	if t.delay > 0 {
		t.schedule = append(t.schedule, "RandomizedDelaySec="+t.delayText)
	}
	if t.persistent {
		t.schedule = append(t.schedule, "Persistent=true")
	}
	return t
}

// serviceInfo is what coverage shows of a timer's service.
type serviceInfo struct {
	exec, user, slice string
	dynamicUser       bool
	notes             []string
}

// serviceUID is the user a service runs as: User= (root without one);
// nil when it is not known (DynamicUser=, or a user the host lacks).
func (s *scanner) serviceUID(si serviceInfo) *uint32 {
	if si.dynamicUser {
		return nil
	}
	name := si.user
	if name == "" {
		name = "root"
	}
	if uid, ok := s.uidOf(name); ok {
		return &uid
	}
	return nil
}

func (s *scanner) service(name string, dirs []string) serviceInfo {
	var si serviceInfo
	u, err := s.loadUnit(name, dirs)
	if err != nil {
		si.notes = append(si.notes, fmt.Sprintf("its unit %s: %v", name, err))
		return si
	}
	for _, o := range u.opts {
		if o.Section != "Service" {
			continue
		}
		v := strings.TrimSpace(o.Value)
		switch o.Name {
		case "ExecStart":
			if v == "" || si.exec == "" {
				si.exec = strings.TrimLeft(specifiers(v, name), "-@:+!")
			}
		case "User":
			si.user = specifiers(v, name)
		case "DynamicUser":
			si.dynamicUser = v == "yes" || v == "true" || v == "on" || v == "1"
		case "Slice":
			si.slice = v
		}
	}
	return si
}

// timerTimes sets a timer's last trigger (D-Bus, or its stamp file), its
// schedule and its next run.
func (s *scanner) timerTimes(j *job, name string, t timer) {
	if at, ok := s.o.Triggers[name]; ok && !at.IsZero() {
		j.last, j.lastFrom = at, "dbus"
	} else if fi, err := s.fs.stat(path.Join(s.o.TimerStamps, "stamp-"+name)); err == nil && fi.Mode().IsRegular() {
		j.last, j.lastFrom = fi.ModTime(), "stamp"
		if !t.persistent {
			j.Notes = append(j.Notes, "a stamp file, though not Persistent=true: it may be old")
		}
	}
	ts := timerSchedule{calendars: t.calendars, loc: s.loc}
	if len(t.monotonic) > 0 {
		ts.mono = &monotonic{values: t.monotonic, boot: s.o.Boot, last: j.last}
		if s.o.Boot.IsZero() {
			j.Notes = append(j.Notes, "the boot time is unknown: its monotonic settings give no time")
		} else {
			j.Notes = append(j.Notes, "monotonic settings: times counted from the boot and the last trigger, approximately")
		}
	}
	j.sched = ts
	next := ts.Next(s.o.Now)
	if t.persistent && !j.last.IsZero() {
		if missed := ts.Next(j.last); !missed.IsZero() && missed.Before(s.o.Now) {
			next = s.o.Now
			j.Notes = append(j.Notes, "an elapse was missed since its last trigger: Persistent=true runs it when the timer starts")
		}
	}
	if !next.IsZero() {
		due := next.Add(j.slack)
		j.NextRun, j.DueBy = &next, &due
	} else if len(t.monotonic) == 0 {
		j.State, j.Counted, j.infer = "never", false, false
		j.Notes = append(j.Notes, "its calendar events never elapse again")
	}
}

// timerSchedule is the union of a timer's calendar events and monotonic
// settings.
type timerSchedule struct {
	calendars []*Calendar
	loc       *time.Location
	mono      *monotonic
}

func (ts timerSchedule) Next(t time.Time) time.Time {
	var best time.Time
	for _, c := range ts.calendars {
		best = earlier(best, c.Next(t, ts.loc))
	}
	if ts.mono != nil {
		best = earlier(best, ts.mono.Next(t))
	}
	return best
}

// earlier returns the earlier of two times, a zero time meaning none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// monotonic gives the elapses of OnBootSec=-like settings. OnBootSec=,
// OnStartupSec= and OnActiveSec= elapse once, after the boot (a system
// timer starts at boot); OnUnitActiveSec= and OnUnitInactiveSec= repeat,
// counted from the last trigger when known, else from the first elapse
// after boot. A service's running time shifts the real ones a little.
type monotonic struct {
	values []monoValue
	boot   time.Time
	last   time.Time
}

func (m *monotonic) Next(t time.Time) time.Time {
	if m.boot.IsZero() {
		return time.Time{}
	}
	var best, first time.Time
	var every time.Duration
	for _, v := range m.values {
		switch v.key {
		case "OnUnitActiveSec", "OnUnitInactiveSec":
			if every == 0 || v.d < every {
				every = v.d
			}
		default:
			at := m.boot.Add(v.d)
			first = earlier(first, at)
			if at.After(t) {
				best = earlier(best, at)
			}
		}
	}
	anchor := first
	if m.last.After(m.boot) {
		anchor = m.last
	}
	if every > 0 && !anchor.IsZero() {
		at := anchor.Add(every)
		if !at.After(t) {
			at = anchor.Add(every * (t.Sub(anchor)/every + 1))
		}
		best = earlier(best, at)
	}
	return best
}
