package coverage

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// timespanUnits are systemd's time span units (systemd.time(7)).
var timespanUnits = map[string]time.Duration{
	"usec": time.Microsecond, "us": time.Microsecond, "µs": time.Microsecond,
	"msec": time.Millisecond, "ms": time.Millisecond,
	"seconds": time.Second, "second": time.Second, "sec": time.Second, "s": time.Second, "": time.Second,
	"minutes": time.Minute, "minute": time.Minute, "min": time.Minute, "m": time.Minute,
	"hours": time.Hour, "hour": time.Hour, "hr": time.Hour, "h": time.Hour,
	"days": 24 * time.Hour, "day": 24 * time.Hour, "d": 24 * time.Hour,
	"weeks": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "w": 7 * 24 * time.Hour,
	"months": 2629800 * time.Second, "month": 2629800 * time.Second, "M": 2629800 * time.Second,
	"years": 31557600 * time.Second, "year": 31557600 * time.Second, "y": 31557600 * time.Second,
}

// maxTimespan bounds a time span (systemd's own bound is larger than a
// time.Duration).
const maxTimespan = 100 * 365 * 24 * time.Hour

// parseTimespan parses a systemd time span: "15min", "1h 30min", "6000"
// (seconds), "2.5h". "infinity" is refused: no timer elapses after it.
func parseTimespan(s string) (time.Duration, error) {
	rest := strings.TrimSpace(s)
	if rest == "" {
		return 0, fmt.Errorf("empty time span")
	}
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		num := rest[:i]
		rest = strings.TrimLeft(rest[i:], " ")
		j := 0
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9') && rest[j] != ' ' {
			j++
		}
		unit, ok := timespanUnits[rest[:j]]
		v, err := strconv.ParseFloat(num, 64)
		if !ok || err != nil || v < 0 {
			return 0, fmt.Errorf("%q is not a time span", s)
		}
		if d := v * float64(unit); d < float64(maxTimespan-total) {
			total += time.Duration(d)
		} else {
			return 0, fmt.Errorf("%q: longer than 100 years", s)
		}
		rest = strings.TrimLeft(rest[j:], " ")
	}
	return total, nil
}
