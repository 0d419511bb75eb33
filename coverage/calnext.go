package coverage

import "time"

// Next returns the calendar event's first elapse strictly after after, or
// the zero time when it has none before the year 2200. local is the zone
// of an event that names none.
func (c *Calendar) Next(after time.Time, local *time.Location) time.Time {
	if !c.at.IsZero() {
		if c.at.After(after) {
			return c.at
		}
		return time.Time{}
	}
	loc := c.loc
	if loc == nil {
		loc = local
	}
	if loc == nil {
		loc = time.Local
	}
	t := after.In(loc).Truncate(time.Second).Add(time.Second)
	for y := t.Year(); y <= maxYear; y++ {
		if !matchAny(c.year, y) {
			continue
		}
		m0 := 1
		if y == t.Year() {
			m0 = int(t.Month())
		}
		for m := m0; m <= 12; m++ {
			if !matchAny(c.month, m) {
				continue
			}
			if r, ok := c.inMonth(y, m, t, after, loc); ok {
				return r
			}
		}
	}
	return time.Time{}
}

// inMonth looks for the first elapse of month m of year y at or after t.
func (c *Calendar) inMonth(y, m int, t, after time.Time, loc *time.Location) (time.Time, bool) {
	last := time.Date(y, time.Month(m)+1, 0, 12, 0, 0, 0, time.UTC).Day()
	d0 := 1
	if y == t.Year() && m == int(t.Month()) {
		d0 = t.Day()
	}
	for d := d0; d <= last; d++ {
		if !c.dayMatches(y, m, d, last) {
			continue
		}
		from := clock{}
		if y == t.Year() && m == int(t.Month()) && d == t.Day() {
			from = clock{t.Hour(), t.Minute(), t.Second()}
		}
		if r, ok := c.onDay(date{y, m, d}, from, after, loc); ok {
			return r, true
		}
	}
	return time.Time{}, false
}

type date struct{ y, m, d int }
type clock struct{ h, m, s int }

// onDay looks for the first elapse on day d at or after the time from.
func (c *Calendar) onDay(d date, from clock, after time.Time, loc *time.Location) (time.Time, bool) {
	for h := from.h; h < 24; h++ {
		if !matchAny(c.hour, h) {
			continue
		}
		m0 := 0
		if h == from.h {
			m0 = from.m
		}
		for mi := m0; mi < 60; mi++ {
			if !matchAny(c.minute, mi) {
				continue
			}
			s0 := 0
			if h == from.h && mi == from.m {
				s0 = from.s
			}
			for s := s0; s < 60; s++ {
				if !matchAny(c.second, s) {
					continue
				}
				// A time the zone skips (a DST gap) is no elapse; of a
				// time it repeats, the first is (as mktime gives it).
				r := earliest(time.Date(d.y, time.Month(d.m), d.d, h, mi, s, 0, loc))
				if r.Day() == d.d && r.Hour() == h && r.Minute() == mi && r.After(after) {
					return r, true
				}
			}
		}
	}
	return time.Time{}, false
}

func (c *Calendar) dayMatches(y, m, d, last int) bool {
	if c.weekdays != 0 {
		wd := (int(time.Date(y, time.Month(m), d, 12, 0, 0, 0, time.UTC).Weekday()) + 6) % 7 // Monday is 0
		if c.weekdays&(1<<wd) == 0 {
			return false
		}
	}
	if c.day == nil {
		return true
	}
	for _, k := range c.day {
		if c.endOfMonth {
			k = k.fromEnd(last)
		}
		if k.matches(d) {
			return true
		}
	}
	return false
}

// fromEnd turns a day counted from the end of a month of last days into a
// day of the month: ~1 is the last day; a range ~a..b runs from the b-th
// last day to the a-th last.
func (k component) fromEnd(last int) component {
	start := last - k.start + 1
	if k.stop < 0 {
		return component{start, -1, k.repeat}
	}
	return component{last - k.stop + 1, start, k.repeat}
}

// earliest returns the first instant with r's wall clock time, when the
// zone repeats it (the hour after a change back from summer time).
func earliest(r time.Time) time.Time {
	_, now := r.Zone()
	_, before := r.Add(-3 * time.Hour).Zone()
	if before <= now {
		return r
	}
	e := r.Add(-time.Duration(before-now) * time.Second)
	if e.Hour() == r.Hour() && e.Minute() == r.Minute() && e.Second() == r.Second() && e.Day() == r.Day() {
		return e
	}
	return r
}
