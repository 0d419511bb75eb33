package coverage

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// cronSchedule is a crontab line's schedule, read by robfig/cron with
// the rules of Vixie cron (Debian's): Sunday is 0 or 7, and a day of the
// month and a day of the week both restricted match either, unless one
// of the two fields starts with "*".
type cronSchedule struct {
	spec *cron.SpecSchedule
	loc  *time.Location
}

func (c cronSchedule) Next(t time.Time) time.Time {
	return c.spec.Next(t.In(c.loc))
}

// rebootSchedule is @reboot: a run when cron starts, at boot.
type rebootSchedule struct{}

func (rebootSchedule) Next(time.Time) time.Time { return time.Time{} }

// cronStar is robfig/cron's mark of a field written "*" (SpecSchedule
// keeps it in bit 63 of Dom and Dow): it makes the day fields match
// together rather than either.
const cronStar = 1 << 63

var cronKeywords = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// parseCronSchedule reads the five time fields, or an @keyword.
func parseCronSchedule(fields []string, loc *time.Location) (schedule, error) {
	if len(fields) == 1 && strings.HasPrefix(fields[0], "@") {
		kw := strings.ToLower(fields[0])
		if kw == "@reboot" {
			return rebootSchedule{}, nil
		}
		spec, ok := cronKeywords[kw]
		if !ok {
			return nil, fmt.Errorf("%s is not a cron keyword", fields[0])
		}
		fields = strings.Fields(spec)
	}
	if len(fields) != 5 {
		return nil, fmt.Errorf("%d time fields, want 5", len(fields))
	}
	for _, f := range fields {
		// robfig/cron reads a leading TZ= itself; no cron field has one.
		if strings.ContainsAny(f, "=?") || len(f) > 200 {
			return nil, fmt.Errorf("%q is not a cron field", f)
		}
	}
	dow, err := expandDow(fields[4])
	if err != nil {
		return nil, err
	}
	s, err := cronParser.Parse(strings.Join([]string{fields[0], fields[1], fields[2], fields[3], dow}, " "))
	if err != nil {
		return nil, err
	}
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("unexpected schedule %T", s)
	}
	if strings.HasPrefix(fields[2], "*") {
		spec.Dom |= cronStar
	}
	if strings.HasPrefix(fields[4], "*") {
		spec.Dow |= cronStar
	}
	spec.Location = loc
	return cronSchedule{spec: spec, loc: loc}, nil
}

var dowNames = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

func dowValue(s string) (int, error) {
	if n, ok := dowNames[strings.ToLower(s)]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 7 {
		return 0, fmt.Errorf("%q is not a day of the week (0-7 or sun-sat)", s)
	}
	return n, nil
}

// expandDow writes a day-of-week field as a list of 0-6, 7 being Sunday
// as in Vixie cron (robfig/cron stops at 6).
func expandDow(f string) (string, error) {
	if f == "*" || strings.HasPrefix(f, "*/") {
		return f, nil
	}
	var days []int
	for _, item := range strings.Split(f, ",") {
		rng, stepText, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 || n > 7 {
				return "", fmt.Errorf("%q: not a step of days", item)
			}
			step = n
		}
		lo, hi := 0, 7
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = dowValue(a); err != nil {
				return "", err
			}
			hi = lo
			if isRange {
				if hi, err = dowValue(b); err != nil {
					return "", err
				}
			} else if hasStep {
				hi = 7
			}
		}
		if lo > hi {
			return "", fmt.Errorf("%q: the range runs backwards", item)
		}
		for d := lo; d <= hi; d += step {
			if !slices.Contains(days, d%7) {
				days = append(days, d%7)
			}
		}
	}
	slices.Sort(days)
	out := make([]string, len(days))
	for i, d := range days {
		out[i] = strconv.Itoa(d)
	}
	return strings.Join(out, ","), nil
}
