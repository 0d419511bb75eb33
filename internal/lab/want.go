//go:build linux

package lab

import (
	"strings"
	"testing"
)

// WantAll reports each of wants that text, what the test read (named
// what: "status", "stderr"), lacks.
func WantAll(t testing.TB, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}
