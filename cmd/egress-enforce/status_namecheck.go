package main

import (
	"fmt"
	"io"
	"time"

	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/follow"
	"github.com/egresskit/egress/namecheck"
	"github.com/egresskit/egress/store"
)

// nameCheckState is what status knows of the name check: how many
// elements the current generation name-checks, and whether a check is
// attached (pinned), with its counters.
type nameCheckState struct {
	Elements int              `json:"elements"`
	Mode     string           `json:"mode,omitempty"`
	Attached bool             `json:"attached"`
	PinDir   string           `json:"pin_dir,omitempty"`
	Stats    *namecheck.Stats `json:"stats,omitempty"`
	Note     string           `json:"note,omitempty"`
}

// readNameCheck fills s.NameCheck when the current generation
// name-checks elements, or a check is pinned.
func (s *status) readNameCheck(e *env, pinRoot string) {
	nc := &nameCheckState{}
	if db, err := store.Open(e.Cfg.DB, store.Options{LockTimeout: 2 * time.Second}); err == nil {
		if g, err := rollout.Current(db, e.target, e.Cfg.Table); err == nil && g != nil && g.Mode != rollout.ModeRemoved {
			if p, err := rollout.LoadPlan(db, g.Effective()); err == nil {
				nc.Elements, nc.Mode = len(p.NameChecks()), p.NameCheck
			}
		}
	}
	if cookie, err := follow.EnforcedNetns(e.target); err == nil {
		nc.PinDir = namecheck.PinDirOf(pinRoot, e.Cfg.Table, cookie)
		nc.Attached = namecheck.Pinned(nc.PinDir)
		if st, err := namecheck.PinnedStats(nc.PinDir); err == nil {
			nc.Stats = &st
		}
	}
	switch {
	case nc.Elements == 0 && !nc.Attached:
		return
	case nc.Elements > 0 && !nc.Attached:
		nc.Note = "no check is attached: \"egress-enforce namecheck\" does not run, and names are not checked (addresses are)"
	case nc.Elements == 0:
		nc.Note = "a check is attached, but the current generation name-checks nothing"
	}
	s.NameCheck = nc
}

// writeNameCheck prints the name check's state.
func writeNameCheck(w io.Writer, s *status) {
	nc := s.NameCheck
	if nc == nil {
		return
	}
	state := "not attached"
	if nc.Attached {
		state = "attached (pinned at " + nc.PinDir + ")"
	}
	fmt.Fprintf(w, "name check: %d name-checked elements (%s), %s\n", nc.Elements, dash(nc.Mode), state)
	if nc.Note != "" {
		fmt.Fprintf(w, "  %s\n", nc.Note)
	}
	if st := nc.Stats; st != nil {
		fmt.Fprintf(w, "  connections checked: %d (%d passed, %d presented another name, %d no name); %d segments dropped, %d gathered; %d refusals not reported (ring buffer full)\n",
			st.Checked, st.Passed, st.Mismatch, st.NoName, st.Dropped, st.Gathered, st.Lost)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
