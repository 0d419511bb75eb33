package deploy

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// testVersion and testCommit are built into the tools the tests build.
const (
	testVersion = "0.0.1+test"
	testCommit  = "0123456789ab"
)

// buildTools builds egress-learn and egress-enforce, with testVersion and
// testCommit, into a temporary directory and returns it.
func buildTools(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	ldflags := "-X github.com/egresskit/egress/internal/buildinfo.Version=" + testVersion +
		" -X github.com/egresskit/egress/internal/buildinfo.Commit=" + testCommit
	for _, cmd := range []string{"egress-learn", "egress-enforce"} {
		if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", filepath.Join(bin, cmd), "../cmd/"+cmd).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", cmd, err, out)
		}
	}
	return bin
}
