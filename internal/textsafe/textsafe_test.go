package textsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"api.example.com":        "api.example.com",
		"a\tb":                   `a\tb`,
		"evil\n  root\t0":        `evil\n  root\t0`,
		"\x1b[2J\x1b]0;x\x07":    `\x1b[2J\x1b]0;x\a`,
		"ab\u202ecd":             `ab\u202ecd`,
		"caf\u00e9":              "caf\u00e9",
		"\xff\xfe":               `\xff\xfe`,
		"r\u00e9sum\u00e9\x7f":   "r\u00e9sum\u00e9\\x7f",
		"\u200bzero":             `\u200bzero`,
		"\r":                     `\r`,
		"\x00":                   `\x00`,
		"bad\xc3":                `bad\xc3`,
		"tab\xff(tabwriter esc)": `tab\xff(tabwriter esc)`,
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
		if got := string(Append([]byte("x:"), in)); got != "x:"+want {
			t.Errorf("Append(%q) = %q, want %q", in, got, "x:"+want)
		}
		got := String(in)
		for _, c := range got {
			if c < 0x20 || c == 0x7f || c == 0xff || c == '\u202e' {
				t.Errorf("String(%q) = %q holds %U", in, got, c)
			}
		}
	}
}

func TestUnsafe(t *testing.T) {
	for in, want := range map[string]int{"": -1, "a\nb …\n": -1, "a\tb": 1, "ab\u202e": 2, "\xff": 0, "ok\x1b[2J": 2, "x\x7f": 1, "\r\n": 0} {
		if got := Unsafe(in); got != want {
			t.Errorf("Unsafe(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestJoin(t *testing.T) {
	if got, want := Join([]string{"a\nb", "c", "\x1b"}, ", "), `a\nb, c, \x1b`; got != want {
		t.Errorf("Join = %q, want %q", got, want)
	}
	if got := Join(nil, ","); got != "" {
		t.Errorf("Join(nil) = %q", got)
	}
	if got := Strings([]string{"x\ty"}); len(got) != 1 || got[0] != `x\ty` {
		t.Errorf("Strings = %q", got)
	}
}

func FuzzString(f *testing.F) {
	f.Add("a\tb\n\x1b[2J\xff\u202e")
	f.Fuzz(func(t *testing.T, s string) {
		got := String(s)
		if i := Unsafe(got); i >= 0 || strings.Contains(got, "\n") || !utf8.ValidString(got) {
			t.Fatalf("String(%q) = %q: unsafe at %d", s, got, i)
		}
	})
}
