//go:build linux

package rollout

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// restore runs Restore into a fresh kernel (nftables keeps nothing across
// a reboot) and returns it.
func (r *rig) restore(o RestoreOptions) (*nft.Fake, *RestoreResult, error) {
	r.t.Helper()
	k := nft.NewFake(r.k.Target())
	o.DB, o.Kernel, o.Table, o.Logger = r.db, k, plan.DefaultTable, quiet
	if o.BootPolicy == "" {
		o.BootPolicy = BootOpen
	}
	res, err := Restore(o)
	return k, res, err
}

// TestRestorePutsBackTheCurrentGeneration: after a reboot the kept
// generation is back, recorded as a generation that restores it.
func TestRestorePutsBackTheCurrentGeneration(t *testing.T) {
	r := newRig(t)
	p := planOf(plan.ModeEnforce, 443, 22)
	r.apply(planOf(plan.ModeAudit, 443), Options{})
	r.apply(p, Options{})
	k, res, err := r.restore(RestoreOptions{Command: "restore"})
	if err != nil || res.Action != RestoreRestored || res.Restores != 2 || res.Elements != 2 || res.Generation != 3 {
		t.Fatalf("restore: %+v %v", res, err)
	}
	if k.Dump() != r.k.Dump() {
		t.Errorf("restored\n%s\nwant\n%s", k.Dump(), r.k.Dump())
	}
	if g := r.gen(3); g.Restores != 2 || g.Command != "restore" {
		t.Errorf("the restore's record %+v", g)
	}
}

// TestRestoreTreatsPendingAsNotConfirmed: a generation still pending at
// boot (its guard died with the host) is rolled back, and the kept one
// before it restored.
func TestRestoreTreatsPendingAsNotConfirmed(t *testing.T) {
	r := newRig(t)
	kept := planOf(plan.ModeAudit, 443)
	r.apply(kept, Options{})
	p := r.pending(planOf(plan.ModeEnforce, 443))
	k, res, err := r.restore(RestoreOptions{})
	if err != nil || res.Restores != 1 || len(res.RolledBack) != 1 || res.RolledBack[0] != p.N {
		t.Fatalf("restore: %+v %v", res, err)
	}
	if g := r.gen(p.N); g.State != store.GenRolledBack || !strings.Contains(g.Note, "not confirmed before restart") {
		t.Errorf("the pending generation %+v", g)
	}
	if in := k.Plan(plan.DefaultTable); in == nil || in.String() != kept.String() {
		t.Errorf("restored:\n%s", k.Dump())
	}
}

// TestRestoreAfterRemove: a removal is a generation: restore leaves no
// table.
func TestRestoreAfterRemove(t *testing.T) {
	r := newRig(t)
	r.apply(planOf(plan.ModeEnforce, 443), Options{})
	if _, _, err := Remove(r.st, r.k, plan.DefaultTable, Options{Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	k, res, err := r.restore(RestoreOptions{})
	if err != nil || res.Action != RestoreRemoved || k.Dump() != "" {
		t.Errorf("restore after remove: %+v %v\n%s", res, err, k.Dump())
	}
}

// TestRestoreFromTheFiles: with the store unreadable, restore puts back
// what the files beside it name, and fails loudly.
func TestRestoreFromTheFiles(t *testing.T) {
	r := newRig(t)
	p := planOf(plan.ModeEnforce, 443)
	r.apply(p, Options{})
	if err := os.WriteFile(r.db, []byte("not a bbolt file, not at all, no"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, res, err := r.restore(RestoreOptions{})
	if err == nil || !strings.Contains(err.Error(), "store cannot be read") || res.FromFiles == "" || res.Action != RestoreRestored {
		t.Fatalf("restore: %+v %v", res, err)
	}
	if in := k.Plan(plan.DefaultTable); in == nil || in.String() != p.String() {
		t.Errorf("restored:\n%s", k.Dump())
	}
}

// TestRestoreBootPolicy: with nothing to restore, boot_policy open leaves
// no table and closed applies the minimal one, recorded.
func TestRestoreBootPolicy(t *testing.T) {
	r := newRig(t)
	k, res, err := r.restore(RestoreOptions{})
	if err != nil || res.Action != RestoreOpen || k.Dump() != "" {
		t.Errorf("open: %+v %v", res, err)
	}
	closed := plan.ClosedPlan(plan.Options{DNSServers: []netip.Addr{netip.MustParseAddr("192.0.2.53")}})
	k, res, err = r.restore(RestoreOptions{BootPolicy: BootClosed, Closed: closed})
	if err != nil || res.Action != RestoreClosed || res.Generation == 0 || !strings.Contains(k.Dump(), "policy drop;") {
		t.Fatalf("closed: %+v %v\n%s", res, err, k.Dump())
	}
	if g := r.gen(res.Generation); g.Mode != ModeClosed {
		t.Errorf("the closed table's record %+v", g)
	}
}

// TestRestoreRefusesAnUnsafeTable: a kept table that would cut off DNS is
// not restored without force; boot_policy decides instead, and the error
// says why.
func TestRestoreRefusesAnUnsafeTable(t *testing.T) {
	r := newRig(t)
	noDNS := planOf(plan.ModeEnforce, 443)
	noDNS.Rules = withoutDNS(noDNS.Rules)
	r.apply(noDNS, Options{})
	k, res, err := r.restore(RestoreOptions{})
	if !errors.Is(err, plan.ErrUnsafe) || res.Action != RestoreOpen || k.Dump() != "" {
		t.Errorf("restore: %+v %v", res, err)
	}
	if k, res, err = r.restore(RestoreOptions{Force: true}); err != nil || res.Action != RestoreRestored || k.Dump() == "" {
		t.Errorf("restore --force: %+v %v", res, err)
	}
}

// withoutDNS leaves out the rules that allow the DNS servers.
func withoutDNS(rules []plan.Rule) []plan.Rule {
	var out []plan.Rule
	for _, r := range rules {
		if r.Allow == nil || r.Allow.Reason != plan.ReasonDNS {
			out = append(out, r)
		}
	}
	return out
}
