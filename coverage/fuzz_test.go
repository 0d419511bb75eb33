package coverage

import (
	"strings"
	"testing"
	"time"
)

// FuzzCalendar: any calendar event text parses or fails, never panics,
// and an elapse comes strictly after its base.
func FuzzCalendar(f *testing.F) {
	for _, s := range calendarSpecs {
		f.Add(s)
	}
	base := mustTime("2026-11-29T12:00:00Z")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCalendar(s)
		if err != nil {
			return
		}
		if n := c.Next(base, time.UTC); !n.IsZero() && !n.After(base) {
			t.Fatalf("%q: elapse %s not after %s", s, n, base)
		}
	})
}

// FuzzCronLine: any crontab line (a user writes hers) is read or
// refused, never panics.
func FuzzCronLine(f *testing.F) {
	for _, s := range []string{"*/15 * * * * cmd", "0 6 * * 5-7 root x", "@reboot x", "TZ=x", "0 0 */2 * 1 a%b", "* * * * 1/3,sun x"} {
		f.Add(s, false)
	}
	base := mustTime("2026-11-29T12:00:00Z")
	f.Fuzz(func(t *testing.T, line string, system bool) {
		if strings.Contains(line, "\n") {
			return
		}
		e, ok := parseCronLine(line, system, time.UTC)
		if ok && e.err == nil && e.sched != nil {
			if n := e.sched.Next(base); !n.IsZero() && !n.After(base) {
				t.Fatalf("%q: elapse %s not after %s", line, n, base)
			}
		}
	})
}
