package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionScript: deploy/version.sh gives valid Debian versions that
// sort in the order of the history: snapshots before a tag sort below it,
// snapshots after it above it, a release candidate below its release.
func TestVersionScript(t *testing.T) {
	for _, tool := range []string{"git", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing; CI=true, so this is a failure", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	repo := t.TempDir()
	script, err := os.ReadFile("version.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(repo, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "deploy/version.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	version := func() string {
		t.Helper()
		out, err := exec.Command(filepath.Join(repo, "deploy/version.sh")).Output()
		if err != nil {
			t.Fatalf("version.sh: %v", err)
		}
		v := strings.TrimSpace(string(out))
		if out, err := exec.Command("dpkg", "--validate-version", v).CombinedOutput(); err != nil {
			t.Errorf("%q is not a Debian version: %s", v, out)
		}
		return v
	}
	if v := version(); v != "0.0.0+unknown" {
		t.Errorf("outside git: %q", v)
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t",
			"GIT_COMMITTER_DATE=2026-01-02T03:04:05Z", "GIT_AUTHOR_DATE=2026-01-02T03:04:05Z")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "one")
	snapshot := version()
	if !regexp.MustCompile(`^0\.0\.0\+git20260102030405\.[0-9a-f]{7}$`).MatchString(snapshot) {
		t.Errorf("untagged: %q", snapshot)
	}
	git("tag", "v1.2.3")
	release := version()
	if release != "1.2.3" {
		t.Errorf("tagged: %q", release)
	}
	git("commit", "-q", "--allow-empty", "-m", "two")
	after := version()
	if !strings.HasPrefix(after, "1.2.3+git20260102030405.") {
		t.Errorf("after the tag: %q", after)
	}
	if err := os.WriteFile(filepath.Join(repo, "deploy/version.sh"), append(script, '\n'), 0o755); err != nil {
		t.Fatal(err)
	}
	dirty := version()
	if dirty != after+".dirty" {
		t.Errorf("with changes: %q", dirty)
	}
	git("checkout", "-q", "--", ".")
	git("tag", "v2.0.0-rc1")
	rc := version()
	if rc != "2.0.0~rc1" {
		t.Errorf("release candidate: %q", rc)
	}
	order := []string{snapshot, release, after, dirty, rc, "2.0.0"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
			t.Errorf("%s does not sort before %s", order[i-1], order[i])
		}
	}
}
