package main

import (
	"testing"

	"github.com/egresskit/egress/internal/cli/usagetest"
)

// TestREADMEUsageListsEveryFlag (issue 11): the README's usage lines list
// every flag each command takes, and no flag it does not take; so do the
// commands' own Use lines. The README cannot drift from the code.
func TestREADMEUsageListsEveryFlag(t *testing.T) {
	usagetest.Check(t, "../../README.md", newRoot())
}
