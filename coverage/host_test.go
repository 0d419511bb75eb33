package coverage

import (
	"os/exec"
	"testing"
	"time"
)

// TestThisHost reads this machine's own unit directories and crontabs and
// prints what it finds. It asserts no count (any host passes); it shows
// the parser copes with real units, and that every calendar event it
// read elapses where systemd-analyze says.
func TestThisHost(t *testing.T) {
	o := DefaultOptions()
	o.Now = time.Now()
	c, text := scanText(t, o)
	t.Logf("this host:\n%s", text)
	for _, j := range c.Jobs {
		if j.Kind == "timer" && j.State == "invalid" {
			t.Logf("%s: invalid: %v", j.Name, j.Notes)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		return
	}
	s := &scanner{o: o, fs: files{root: "/"}, loc: time.Local}
	for _, j := range s.timers() {
		ts, ok := j.sched.(timerSchedule)
		if !ok {
			continue
		}
		for _, cal := range ts.calendars {
			want, err := analyzeCalendar("UTC", o.Now, cal.Spec, 3)
			if err != nil {
				t.Errorf("%s: systemd-analyze refuses %q, which we read: %v", j.Name, cal.Spec, err)
				continue
			}
			utc, _ := ParseCalendar(cal.Spec)
			if got := iterate(utc, o.Now, time.UTC, 3); len(got) < len(want) || got[0] != want[0] {
				t.Errorf("%s: %q elapses at %v, systemd-analyze says %v", j.Name, cal.Spec, got, want)
			}
		}
	}
}
