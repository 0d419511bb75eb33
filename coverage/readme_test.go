package coverage

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestReadmeExample: the README's "egress-learn coverage" example is the
// fixture host's output: each line it shows, but "...", is a line of
// WriteText's output, the verdict included.
func TestReadmeExample(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const head = "$ egress-learn coverage     # on the test fixture"
	text := string(data)
	i := strings.Index(text, head)
	if i < 0 {
		t.Fatalf("README has no example starting %q", head)
	}
	block := text[i:]
	block = block[strings.Index(block, "\n")+1 : strings.Index(block, "```")]

	_, out := scanText(t, fixOptions(fixtureRoot(t)))
	var got []string
	for _, l := range strings.Split(out, "\n") {
		got = append(got, strings.TrimRight(l, " "))
	}
	shown := 0
	for _, l := range strings.Split(strings.TrimRight(block, "\n"), "\n") {
		if l = strings.TrimRight(l, " "); l == "..." {
			continue
		}
		shown++
		if !slices.Contains(got, l) {
			t.Errorf("README's example shows a line the fixture's output does not have:\n%s", l)
		}
	}
	if shown < 5 || !strings.Contains(block, "verdict: ") {
		t.Errorf("README's example: %d lines, verdict included: %v", shown, strings.Contains(block, "verdict: "))
	}
	if t.Failed() {
		t.Logf("the fixture's output:\n%s", text)
	}
}
