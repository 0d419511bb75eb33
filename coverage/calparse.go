package coverage

import (
	"fmt"
	"strconv"
	"strings"
)

// cursor walks the text of a calendar event.
type cursor struct {
	s string
	i int
}

func (p *cursor) done() bool   { return p.i >= len(p.s) }
func (p *cursor) peek() byte   { return p.s[p.i] }
func (p *cursor) rest() string { return p.s[p.i:] }

func (p *cursor) skipSpaces() {
	for !p.done() && p.peek() == ' ' {
		p.i++
	}
}

// dayNames: full names first, so "Monday" is not read as "Mon" + "day".
var dayNames = []struct {
	name string
	nr   int
}{
	{"monday", 0}, {"mon", 0}, {"tuesday", 1}, {"tue", 1}, {"wednesday", 2}, {"wed", 2},
	{"thursday", 3}, {"thu", 3}, {"friday", 4}, {"fri", 4}, {"saturday", 5}, {"sat", 5},
	{"sunday", 6}, {"sun", 6},
}

func (p *cursor) dayName() (int, bool) {
	rest := strings.ToLower(p.rest())
	for _, d := range dayNames {
		if strings.HasPrefix(rest, d.name) {
			p.i += len(d.name)
			return d.nr, true
		}
	}
	return 0, false
}

// weekdays reads an optional list of days and ranges (Mon..Fri, Sat,Sun,
// or the old Mon-Fri) followed by spaces or the end.
func (p *cursor) weekdays(bits *uint8) error {
	from := -1
	for first := true; ; first = false {
		nr, ok := p.dayName()
		if !ok {
			if first {
				return nil
			}
			return errCalendar
		}
		if !p.done() && !strings.ContainsRune("-., ", rune(p.peek())) {
			return errCalendar
		}
		*bits |= 1 << nr
		if from >= 0 {
			if from > nr {
				return errCalendar
			}
			for j := from + 1; j < nr; j++ {
				*bits |= 1 << j
			}
		}
		switch {
		case p.done():
			return nil
		case p.peek() == ' ':
			p.skipSpaces()
			return nil
		case strings.HasPrefix(p.rest(), ".."):
			if from >= 0 {
				return errCalendar
			}
			from, p.i = nr, p.i+2
		case p.peek() == '-':
			if from >= 0 {
				return errCalendar
			}
			from, p.i = nr, p.i+1
		case p.peek() == ',':
			from, p.i = -1, p.i+1
		default:
			return errCalendar
		}
		if p.done() || p.peek() == ' ' {
			p.skipSpaces()
			if from >= 0 {
				return errCalendar // an open range ("Mon.."); a trailing comma is fine
			}
			return nil
		}
	}
}

// maxComponents bounds a field's list, as systemd does.
const maxComponents = 240

// chain reads "*" (nil: any value) or a comma-separated list of
// components. Seconds may carry a fraction, which must be zero.
func (p *cursor) chain(seconds bool) ([]component, error) {
	if !p.done() && p.peek() == '*' {
		p.i++
		return nil, nil
	}
	var out []component
	for {
		if len(out) >= maxComponents {
			return nil, fmt.Errorf("%w: more than %d values in a field", errCalendar, maxComponents)
		}
		k, err := p.component(seconds)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
		if p.done() || p.peek() != ',' {
			break
		}
		p.i++
	}
	if !p.done() && !strings.ContainsRune(" -~:", rune(p.peek())) {
		return nil, errCalendar
	}
	return out, nil
}

func (p *cursor) component(seconds bool) (component, error) {
	k := component{stop: -1}
	var err error
	if k.start, err = p.number(seconds); err != nil {
		return k, err
	}
	if strings.HasPrefix(p.rest(), "..") {
		p.i += 2
		if k.stop, err = p.number(seconds); err != nil {
			return k, err
		}
		k.repeat = 1
	}
	if !p.done() && p.peek() == '/' {
		p.i++
		if k.repeat, err = p.number(seconds); err != nil {
			return k, err
		}
		if k.repeat == 0 {
			return k, fmt.Errorf("%w: a repetition of 0", errCalendar)
		}
	}
	return k, nil
}

// number reads decimal digits (and, for seconds, a fraction that must be
// zero).
func (p *cursor) number(seconds bool) (int, error) {
	j := p.i
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	if j == p.i || j-p.i > 9 {
		return 0, errCalendar
	}
	n, err := strconv.Atoi(p.s[p.i:j])
	if err != nil {
		return 0, errCalendar
	}
	p.i = j
	if seconds && strings.HasPrefix(p.rest(), ".") && !strings.HasPrefix(p.rest(), "..") {
		p.i++
		k := p.i
		for k < len(p.s) && p.s[k] >= '0' && p.s[k] <= '9' {
			if p.s[k] != '0' {
				return 0, fmt.Errorf("%w: fractional seconds are not supported", errCalendar)
			}
			k++
		}
		p.i = k
	}
	return n, nil
}
