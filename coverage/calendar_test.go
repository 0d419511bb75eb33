package coverage

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// calendarSpecs are the events the comparison with systemd runs: the
// shorthands, the timers of Debian packages, and the corners of the
// grammar (ranges, repetitions, end of month, zones, DST, leap years).
var calendarSpecs = []string{
	"weekly", "daily", "hourly", "minutely", "monthly", "quarterly", "semiannually", "yearly", "Annually",
	"*-*-* 6,18:00", "Sun *-*-* 03:10:00", "*-*-* 07..23:30", "*-*-* 00,12:00:00", "*-*-* 6:00",
	"*:0/15", "*-*-* *:00/5:00", "*:*:0/20", "*:*:05", "12:30", "Mon..Fri 9:00", "Sat,Sun 10:00",
	"Mon-Wed 9:00", "Thursday,Friday 8:15", "mon,", "Mon *-*-01..07 12:00", "*-*~01", "*-02~03",
	"Mon *-05~07/1", "*-*~03..01", "*-*~01..06/2", "2027-01-01", "27-3-1 5:00", "*-*-5/10 00:00",
	"*-1/2-1", "*-1..12/5-1", "Fri *-*-13", "*-02-29 12:00", "*-02-30", "2026..2030/2-06-15 08:00",
	"Mon..Fri 9:00 Europe/Berlin", "weekly UTC", "daily Asia/Tokyo", "hourly utc", "@1800000000",
	"*-*-* 02:30", "*-*-* 01..03:00/20:00",
	// refused by both
	"Sat..Mon", "Mon..", "bogus", "*-*-* 24:00", "*:*:30/30", "2200-01-01", "1969-01-01", "*-*-32",
	"*-*~29", "0/0:00", "*-*-* 06/0:00", "Mon *-*-", "", "Mond 10:00", "*-*-* 1:2:3:4",
}

// calendarBases are the times the elapses are counted from: a moved
// clock, both DST changes of Europe/Berlin in 2026, a leap February, and
// an instant that is itself an elapse of several events.
var calendarBases = []string{
	"2026-11-30T11:30:00Z", "2026-03-28T23:59:59Z", "2026-10-24T22:00:00Z", "2028-02-27T06:00:00Z",
	"2026-12-07T00:00:00Z",
}

// TestCalendarMatchesSystemd: for every event above, from every base, in
// UTC and in a zone with DST, the first elapses ParseCalendar and Next
// give are those systemd-analyze calendar --base-time prints, and both
// refuse the same events.
func TestCalendarMatchesSystemd(t *testing.T) {
	requireAnalyze(t)
	for _, tz := range []string{"UTC", "Europe/Berlin"} {
		loc, err := time.LoadLocation(tz)
		if err != nil {
			t.Fatal(err)
		}
		for _, spec := range calendarSpecs {
			for _, b := range calendarBases {
				base, _ := time.Parse(time.RFC3339, b)
				want, sysErr := analyzeCalendar(tz, base, spec, 5)
				cal, err := ParseCalendar(spec)
				if (err != nil) != (sysErr != nil) {
					t.Errorf("TZ=%s %q: ours %v, systemd-analyze %v", tz, spec, err, sysErr)
					break
				}
				if err != nil {
					break
				}
				got := iterate(cal, base, loc, len(want)+1)
				if fmt.Sprint(got[:min(len(got), len(want))]) != fmt.Sprint(want) || len(got) < len(want) || len(want) < 5 && len(got) > len(want) {
					t.Errorf("TZ=%s %q from %s:\n ours    %v\n systemd %v", tz, spec, b, got, want)
				}
			}
		}
	}
}

func iterate(c *Calendar, from time.Time, loc *time.Location, n int) []string {
	var out []string
	for range n {
		next := c.Next(from, loc)
		if next.IsZero() {
			break
		}
		out = append(out, next.UTC().Format(time.DateTime))
		from = next
	}
	return out
}

// requireAnalyze skips without systemd-analyze, unless CI=true.
func requireAnalyze(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing (apt-get install systemd, or make deps); CI=true, so this is a failure")
		}
		t.Skip("systemd-analyze is missing")
	}
}

var errRefused = errors.New("refused")

// analyzeCalendar runs systemd-analyze calendar and returns the elapses
// it prints, in UTC.
func analyzeCalendar(tz string, base time.Time, spec string, n int) ([]string, error) {
	cmd := exec.Command("systemd-analyze", "calendar", fmt.Sprintf("--base-time=@%d", base.Unix()), fmt.Sprintf("--iterations=%d", n), "--", spec)
	cmd.Env = append(os.Environ(), "TZ="+tz, "SYSTEMD_COLORS=0", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", errRefused, strings.TrimSpace(string(out)))
	}
	var times []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		var v string
		switch {
		case tz != "UTC" && strings.HasPrefix(line, "(in UTC):"):
			v = strings.TrimSpace(strings.TrimPrefix(line, "(in UTC):"))
		case tz == "UTC" && (strings.HasPrefix(line, "Next elapse:") || strings.HasPrefix(line, "Iter. #")):
			_, v, _ = strings.Cut(line, ": ")
			v = strings.TrimSpace(v)
		default:
			continue
		}
		if v == "never" {
			break
		}
		// "Mon 2026-12-07 00:00:00 UTC"
		f := strings.Fields(v)
		if len(f) != 4 || f[3] != "UTC" {
			return nil, fmt.Errorf("unexpected line %q", line)
		}
		times = append(times, f[1]+" "+f[2])
	}
	return times, nil
}

func TestCalendarFractionalSeconds(t *testing.T) {
	if _, err := ParseCalendar("*:*:1.5"); err == nil || !strings.Contains(err.Error(), "fractional") {
		t.Errorf("fractional seconds: %v", err)
	}
	c, err := ParseCalendar("*:*:07.000")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := c.Next(base, time.UTC); !got.Equal(base.Add(7 * time.Second)) {
		t.Errorf("*:*:07.000 next %s", got)
	}
}
