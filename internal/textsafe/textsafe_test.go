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
		if strings.ContainsRune(got, '\u202e') || !utf8.ValidString(got) {
			t.Fatalf("String(%q) = %q: bidi override or invalid UTF-8", s, got)
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] == 0x7f {
				t.Fatalf("String(%q) = %q holds control byte %#x", s, got, got[i])
			}
		}
	})
}
