package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// stagedService is one service of staged enforcement by service, as
// status sees it: what the current generation stages, and whether the
// table holds the id of its cgroup now.
type stagedService struct {
	Service string `json:"service"`
	// Stage is enforce or audit: what the generation asks.
	Stage string `json:"stage"`
	// State is what the table does with it now: enforced, audited, or
	// not-running (no cgroup: no socket to match).
	State string `json:"state"`
	// Stale: the service runs but its id is not in the table's set (its
	// cgroup was created again since, and no keeper replaced it).
	Stale bool   `json:"stale,omitempty"`
	Note  string `json:"note,omitempty"`
}

// readStaging compares the staged services of the current generation
// with the ids the table holds. A store or a generation it cannot read
// leaves only what the kernel says.
func (s *status) readStaging(e *env) {
	if len(s.EnforceServices) == 0 && len(s.AuditServices) == 0 && s.Mode != plan.ModeStaged {
		return
	}
	db, err := store.Open(e.Cfg.DB, store.Options{LockTimeout: 2 * time.Second})
	if err != nil {
		return
	}
	_, p, err := currentPlan(db, e.target, e.Cfg.Table)
	if err != nil || p == nil {
		return
	}
	cg, _ := nft.HostCgroups()
	s.Staged = stagedServices(p, s.Status, func(svc string) bool { _, ok := cg.ID(svc); return ok })
}

// stagedServices says, for each staged service of p, what the table does
// with it; running says whether a service's cgroup exists.
func stagedServices(p *plan.Plan, st *nft.Status, running func(svc string) bool) []stagedService {
	var out []stagedService
	add := func(svcs, tableList []string, stage string) {
		inTable := make(map[string]bool, len(tableList)) // the configuration stages any number
		for _, svc := range tableList {
			inTable[svc] = true
		}
		for _, svc := range svcs {
			ss := stagedService{Service: svc, Stage: stage, State: map[string]string{"enforce": "enforced", "audit": "audited"}[stage]}
			switch {
			case !running(svc):
				ss.State, ss.Note = "not-running", "no cgroup: the table holds no id for it; \"egress-enforce services\" (or follow) adds it when it starts"
			case !inTable[svc] && stage == "enforce":
				ss.State, ss.Stale = "audited", true
				ss.Note = "NOT ENFORCED: its cgroup was created again (restarted) and the table holds the old id; it is audited until \"egress-enforce services\" (or follow) puts the new id in"
			case !inTable[svc]:
				ss.State, ss.Stale = "enforced", true
				ss.Note = "enforced, not audited: its cgroup was created again (restarted) and the table holds the old id; \"egress-enforce services\" (or follow) puts the new id in"
			}
			out = append(out, ss)
		}
	}
	add(p.EnforceServices, st.EnforceServices, "enforce")
	add(p.AuditServices, st.AuditServices, "audit")
	return out
}

// writeStaging prints the staged services, a stale one loudly.
func writeStaging(w io.Writer, s *status) {
	st := s.Status
	switch {
	case len(s.Staged) > 0:
		for _, ss := range s.Staged {
			line := fmt.Sprintf("  service %s: %s (staged: %s)", textsafe.String(ss.Service), ss.State, ss.Stage)
			if ss.Note != "" {
				line += ": " + ss.Note
			}
			if ss.Stale {
				line = "  WARNING:" + strings.TrimPrefix(line, " ")
			}
			fmt.Fprintln(w, line)
		}
	case st.EnforceServices != nil:
		fmt.Fprintf(w, "  enforced services: %s; audited: everything else\n", servicesText(st.EnforceServices))
	case st.AuditServices != nil:
		fmt.Fprintf(w, "  audited services: %s; enforced: everything else\n", servicesText(st.AuditServices))
	}
	for _, svc := range append(slices.Clone(st.EnforceServices), st.AuditServices...) {
		if strings.HasPrefix(svc, "cgroup-id:") {
			fmt.Fprintf(w, "  WARNING: a set of staged services holds %s, an id no cgroup has: a staged service was restarted or stopped and no keeper (\"egress-enforce services\" or follow) replaced its id\n", textsafe.String(svc))
		}
	}
}

func servicesText(s []string) string {
	if len(s) == 0 {
		return "none running"
	}
	return textsafe.Join(s, ", ")
}
