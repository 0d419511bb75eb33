package coverage

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Calendar is a systemd calendar event (systemd.time(7)), the value of a
// timer's OnCalendar=: weekdays, a date and a time, each field a list of
// values, ranges (a..b) and repetitions (a/n), in the local zone, UTC or a
// named zone. Next gives its elapses as systemd computes them; the tests
// compare it with systemd-analyze calendar.
type Calendar struct {
	// Spec is the text it was parsed from.
	Spec string
	// weekdays: bit 0 Monday ... bit 6 Sunday; 0 means any day.
	weekdays uint8
	// Each field is a list of components; nil means any value.
	year, month, day, hour, minute, second []component
	// endOfMonth: the days count from the end of the month ("~").
	endOfMonth bool
	// loc is the zone of the spec; nil: the zone Next is given.
	loc *time.Location
	// at is a single point in time (@SECONDS).
	at time.Time
}

// component is start, or start..stop, or start/repeat, or
// start..stop/repeat; stop is -1 when there is none.
type component struct{ start, stop, repeat int }

func (c component) matches(v int) bool {
	if v < c.start || c.stop >= 0 && v > c.stop {
		return false
	}
	if c.repeat == 0 {
		return v == c.start
	}
	return (v-c.start)%c.repeat == 0
}

func matchAny(chain []component, v int) bool {
	if chain == nil {
		return true
	}
	for _, c := range chain {
		if c.matches(v) {
			return true
		}
	}
	return false
}

// The years systemd accepts in a calendar event.
const (
	minYear = 1970
	maxYear = 2199
)

// shorthands are the named events, in their normalized form.
var shorthands = map[string]string{
	"minutely":      "*-*-* *:*:00",
	"hourly":        "*-*-* *:00:00",
	"daily":         "*-*-* 00:00:00",
	"monthly":       "*-*-01 00:00:00",
	"weekly":        "Mon *-*-* 00:00:00",
	"yearly":        "*-01-01 00:00:00",
	"annually":      "*-01-01 00:00:00",
	"anually":       "*-01-01 00:00:00",
	"quarterly":     "*-01,04,07,10-01 00:00:00",
	"semiannually":  "*-01,07-01 00:00:00",
	"semi-annually": "*-01,07-01 00:00:00",
	"biannually":    "*-01,07-01 00:00:00",
	"bi-annually":   "*-01,07-01 00:00:00",
}

var errCalendar = errors.New("not a calendar event")

// ParseCalendar parses a calendar event as systemd.time(7) describes it.
// Fractional seconds are refused (no timer of a host uses them).
func ParseCalendar(spec string) (*Calendar, error) {
	c := &Calendar{Spec: spec}
	s := strings.TrimSpace(spec)
	if len(s) > 1024 {
		return nil, fmt.Errorf("calendar event of %d bytes: too long", len(s))
	}
	s = c.cutZone(s)
	if s == "" {
		return nil, fmt.Errorf("%q: %w", spec, errCalendar)
	}
	if n, ok := shorthands[strings.ToLower(s)]; ok {
		s = n
	}
	if err := c.parse(s); err != nil {
		return nil, fmt.Errorf("%q: %w", spec, err)
	}
	return c, nil
}

// cutZone takes a trailing " UTC" or zone name off s.
func (c *Calendar) cutZone(s string) string {
	i := strings.LastIndexByte(s, ' ')
	if i < 0 {
		return s
	}
	name := s[i+1:]
	if strings.EqualFold(name, "UTC") {
		c.loc = time.UTC
		return strings.TrimRight(s[:i], " ")
	}
	if !strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") || name == "Local" || isWeekdayList(name) {
		return s
	}
	if loc, err := time.LoadLocation(name); err == nil {
		c.loc = loc
		return strings.TrimRight(s[:i], " ")
	}
	return s
}

func isWeekdayList(s string) bool {
	p := &cursor{s: s}
	var w uint8
	return p.weekdays(&w) == nil && p.done()
}

func (c *Calendar) parse(s string) error {
	p := &cursor{s: s}
	if strings.HasPrefix(s, "@") {
		n, err := strconv.ParseInt(s[1:], 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return errCalendar
		}
		c.at = time.Unix(n, 0)
		return nil
	}
	if err := p.weekdays(&c.weekdays); err != nil {
		return err
	}
	if c.weekdays == 0x7f {
		c.weekdays = 0
	}
	if err := c.parseDate(p); err != nil {
		return err
	}
	if err := c.parseTime(p); err != nil {
		return err
	}
	if !p.done() {
		return fmt.Errorf("%w: unexpected %q", errCalendar, p.rest())
	}
	return c.valid()
}

// parseDate reads [[YEAR-]MONTH-DAY] (or ~DAY, counted from the end of the
// month); a first chain followed by ':' was a time, and is left.
func (c *Calendar) parseDate(p *cursor) error {
	if p.done() {
		return nil
	}
	save := p.i
	first, err := p.chain(false)
	if err != nil {
		return err
	}
	if p.done() || p.peek() == ':' {
		p.i = save
		return nil
	}
	second, eom, err := c.dateSeparator(p)
	if err != nil {
		return err
	}
	if p.done() || p.peek() == ' ' {
		p.skipSpaces()
		c.month, c.day, c.endOfMonth = first, second, eom
		return nil
	}
	if eom {
		return errCalendar
	}
	third, eom, err := c.dateSeparator(p)
	if err != nil {
		return err
	}
	if !p.done() && p.peek() != ' ' {
		return errCalendar
	}
	p.skipSpaces()
	c.year, c.month, c.day, c.endOfMonth = fixYears(first), second, third, eom
	return nil
}

// dateSeparator reads '-' or '~' and the chain after it.
func (c *Calendar) dateSeparator(p *cursor) ([]component, bool, error) {
	if p.done() || p.peek() != '-' && p.peek() != '~' {
		return nil, false, errCalendar
	}
	eom := p.peek() == '~'
	p.i++
	chain, err := p.chain(false)
	return chain, eom, err
}

// fixYears turns two-digit years into years: 12 is 2012, 89 is 1989.
func fixYears(chain []component) []component {
	fix := func(v int) int {
		switch {
		case v >= 0 && v < 70:
			return v + 2000
		case v >= 70 && v < 100:
			return v + 1900
		}
		return v
	}
	for i := range chain {
		chain[i].start = fix(chain[i].start)
		if chain[i].stop >= 0 {
			chain[i].stop = fix(chain[i].stop)
		}
	}
	return chain
}

// parseTime reads HOUR:MINUTE[:SECOND]; none means 00:00:00.
func (c *Calendar) parseTime(p *cursor) error {
	zero := []component{{0, -1, 0}}
	if p.done() {
		c.hour, c.minute, c.second = zero, zero, zero
		return nil
	}
	var err error
	if c.hour, err = p.chain(false); err != nil {
		return err
	}
	if p.done() || p.peek() != ':' {
		return errCalendar
	}
	p.i++
	if c.minute, err = p.chain(false); err != nil {
		return err
	}
	if p.done() {
		c.second = zero
		return nil
	}
	if p.peek() != ':' {
		return errCalendar
	}
	p.i++
	c.second, err = p.chain(true)
	return err
}

// valid applies systemd's bounds to every field.
func (c *Calendar) valid() error {
	fields := []struct {
		name     string
		chain    []component
		from, to int
		eom      bool
	}{
		{"year", c.year, minYear, maxYear, false},
		{"month", c.month, 1, 12, false},
		{"day", c.day, 1, 31, c.endOfMonth},
		{"hour", c.hour, 0, 23, false},
		{"minute", c.minute, 0, 59, false},
		{"second", c.second, 0, 59, false},
	}
	for _, f := range fields {
		for i, k := range f.chain {
			// Like systemd, a range ends on a repetition.
			if k.stop > k.start && k.repeat > 0 {
				k.stop -= (k.stop - k.start) % k.repeat
				f.chain[i] = k
			}
			if !k.valid(f.from, f.to, f.eom) {
				return fmt.Errorf("%w: %s out of range", errCalendar, f.name)
			}
		}
	}
	return nil
}

func (k component) valid(from, to int, eom bool) bool {
	if eom {
		to -= 3 // at most the 28th day from the end
	}
	switch {
	case k.start < from || k.start > to || k.repeat > to-from:
		return false
	case k.stop >= 0:
		return k.stop >= from && k.stop <= to && k.start+k.repeat <= k.stop
	case eom:
		return k.start-k.repeat >= from
	}
	return k.start+k.repeat <= to
}
