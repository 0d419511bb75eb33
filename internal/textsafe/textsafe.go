// Package textsafe writes strings from the outside (DNS names, process
// names, crontab commands, reasons an operator typed) into text meant for
// a terminal or a tab-separated table, with the characters a terminal or
// the table would act on written as Go escapes: control and other
// non-printing characters (\t, \n, \x1b, \u202e) and bytes that are not
// UTF-8 (\xff, also text/tabwriter's escape byte). Such a string cannot
// make cells, lines or terminal commands of its own. JSON output does not
// need it: encoding/json escapes, and carries the raw string.
package textsafe

import (
	"strconv"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// Append appends s to b as text output shows it.
func Append(b []byte, s string) []byte {
	if Plain(s) {
		return append(b, s...)
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\x`...)
			b = append(b, hex[s[i]>>4], hex[s[i]&15])
		case strconv.IsPrint(r):
			b = append(b, s[i:i+n]...)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b = append(b, q[1:len(q)-1]...)
		}
		i += n
	}
	return b
}

// String is s as text output shows it (Append); s itself when it is
// printable ASCII.
func String(s string) string {
	if Plain(s) {
		return s
	}
	return string(Append(nil, s))
}

// Strings is each of ss as text output shows it, in a new slice.
func Strings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = String(s)
	}
	return out
}

// Join is strings.Join of the escaped ss.
func Join(ss []string, sep string) string {
	var b []byte
	for i, s := range ss {
		if i > 0 {
			b = append(b, sep...)
		}
		b = Append(b, s)
	}
	return string(b)
}

// Plain reports whether s is printable ASCII (needs no escape).
func Plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Unsafe is the index in text, a whole output whose line ends are its
// own, of the first character Append would have escaped (a control
// character but '\n', a non-printing one, a byte that is not UTF-8); -1
// when there is none. Tests check what a command writes with it.
func Unsafe(text string) int {
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		if r != '\n' && (r == utf8.RuneError && n == 1 || !strconv.IsPrint(r)) {
			return i
		}
		i += n
	}
	return -1
}
