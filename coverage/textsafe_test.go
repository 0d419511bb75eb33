package coverage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/textsafe"
)

// TestCrontabTextSafe: a user's crontab line with a bidi override (which
// would show the command reversed), bytes that are not UTF-8 (0xff is
// also tabwriter's escape byte), a tab and a terminal escape: the table
// shows each as the same escape every text output uses (internal/textsafe),
// the invalid byte as \xff rather than a lost U+FFFD, on one line.
func TestCrontabTextSafe(t *testing.T) {
	root := fixtureRoot(t)
	dir := filepath.Join(root, "var/spool/cron/crontabs")
	evil := "*/5 * * * * /bin/true \u202egnp.exe\xff\xfe\t\x1b[8m\n" +
		"*/5 * * * * /bin/clipped-at-sixty " + strings.Repeat("\xff", 50) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "mallory"), []byte(evil), 0o600); err != nil {
		t.Fatal(err)
	}
	_, text := scanText(t, fixOptions(root))
	for _, want := range []string{`/bin/true \u202egnp.exe\xff\xfe\t\x1b[8m`, `/bin/clipped-at-sixty \xff\xff`, `\xff…`} {
		if !strings.Contains(text, want) {
			t.Errorf("the command is not shown as %s:\n%s", want, text)
		}
	}
	if textsafe.Unsafe(text) >= 0 || strings.Contains(text, "\ufffd") {
		t.Errorf("raw or lost bytes in the output:\n%q", text)
	}
}
