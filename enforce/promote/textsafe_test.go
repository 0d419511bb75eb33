package promote

import (
	"bytes"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// TestOutputEscapesOutsideStrings: the reasons name destinations by the
// names a DNS answer gave, and jobs by names from crontabs a user writes;
// the text shows them escaped (no forged reason line, no terminal
// command), the JSON keeps them raw.
func TestOutputEscapesOutsideStrings(t *testing.T) {
	in := scene()
	in.Names = map[store.FlowKey][]string{key(bob, "10.0.0.9", 8081): {"m.evil\n  - \x1b[2Jnothing to see\t\xff"}}
	in.Jobs.Jobs[0].Name = "/var/spool/cron/crontabs/root:1 \x1b]0;pwned\a"
	r := evaluate(t, in)
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{`m.evil\n  - \x1b[2Jnothing to see\t\xff`, `root:1 \x1b]0;pwned\a`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i := textsafe.Unsafe(out); i >= 0 {
		t.Fatalf("output writes %q raw at %d:\n%q", out[i:min(len(out), i+8)], i, out)
	}
}
