package nft_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/enforce/plan/plantest"
)

// TestFakeKernel: the fake holds what a plan describes, reads back as the
// real kernel does, refuses what nft would refuse, and diffs.
func TestFakeKernel(t *testing.T) {
	k := nft.NewFake(nft.Target{})
	staged := plantest.GoldenCases[2].Plan()
	if _, err := k.Apply(staged); err != nil {
		t.Fatal(err)
	}
	dump := k.Dump()
	if !strings.HasPrefix(dump, "table inet egress {") || !strings.Contains(dump, "set enforce_users {") || strings.Contains(dump, "# Generated") {
		t.Errorf("dump:\n%s", dump)
	}
	st, err := k.Status("egress", false)
	if err != nil || !st.Present || st.Mode != plan.ModeStaged || st.Policy != "accept" || len(st.Rules) != len(staged.Rules) ||
		len(st.EnforceUIDs) != 2 || st.DropsLogged == nil {
		t.Errorf("status %+v %v", st, err)
	}
	k.Drop("egress", 7)
	if st, _ = k.Status("egress", false); st.Dropped.Packets != 7 || st.Default.Packets != 7 {
		t.Errorf("after 7 drops: %+v", st)
	}

	bad := plantest.GoldenCases[0].Plan()
	bad.Rules[0].Text = "accept; flush ruleset"
	if _, err := k.Apply(bad); !errors.Is(err, nft.ErrRejected) || k.Dump() != dump {
		t.Errorf("a plan that does not render: %v", err)
	}

	audit := plantest.GoldenCases[0].Plan()
	d, err := nft.Diff(k, audit)
	if err != nil || d.ModeFrom != plan.ModeStaged || d.ModeTo != plan.ModeAudit || len(d.Added)+len(d.Removed) != 0 || len(d.RulesAdded) == 0 {
		t.Errorf("diff %+v %v", d, err)
	}
	if removed, err := k.Remove("egress"); err != nil || !removed || k.Dump() != "" {
		t.Errorf("remove: %v %v", removed, err)
	}
	if st, _ = k.Status("egress", false); st.Present {
		t.Error("the removed table is present")
	}
}
