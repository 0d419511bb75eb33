package promote

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/textsafe"
)

// Write prints the report for people: the period and the evidence, a
// line per principal, the reasons of each one that is not ready, and
// what --apply would do.
func (r *Report) Write(w io.Writer) error {
	names := map[uint32]string{}
	for _, p := range r.Principals {
		names[p.UID] = p.Name
	}
	where := r.Target
	if where == "" {
		where = "this host's namespace"
	}
	fmt.Fprintf(w, "promotion for table inet %s in %s at %s: quiet for %s, since %s\n", r.Table, where, timeText(r.Now), r.QuietFor, timeText(r.Since))
	fmt.Fprintf(w, "current: generation %d, %s\n", r.Generation, r.Staging.text(names))
	r.writeEvidence(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nUSER\tUID\tSTATE\tREADY\tREASONS")
	for _, p := range r.Principals {
		ready := "-"
		if p.State == StateAudited {
			ready = map[bool]string{true: "yes", false: "no"}[p.Ready]
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\n", textsafe.String(p.Name), p.UID, p.State, ready, len(p.Reasons))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range r.Principals {
		if p.State != StateAudited || p.Ready {
			continue
		}
		fmt.Fprintf(w, "\n%s (uid %d) is not ready:\n", textsafe.String(p.Name), p.UID)
		for _, reason := range p.Reasons {
			fmt.Fprintf(w, "  - %s\n", textsafe.String(reason.Text))
		}
	}
	fmt.Fprintln(w)
	if r.Next == nil {
		fmt.Fprintln(w, "ready: none; nothing to promote")
	} else {
		ready := make([]string, len(r.Ready))
		for i, u := range r.Ready {
			ready[i] = names[u]
		}
		fmt.Fprintf(w, "ready: %s; --apply makes the table %s\n", textsafe.Join(ready, ", "), r.Next.text(names))
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note: "+textsafe.String(n))
	}
	return nil
}

// writeEvidence says what the monitor and the scan of the jobs saw.
func (r *Report) writeEvidence(w io.Writer) {
	m := r.Monitor
	switch {
	case m.Runs == 0:
		fmt.Fprintln(w, "monitor: no record in the period")
	default:
		verdict := "recorded the whole period"
		if !m.Recorded {
			verdict = "NOT a complete record (see the reasons)"
		}
		fmt.Fprintf(w, "monitor: %d run record(s) from %s to %s; %s\n", m.Runs, timeText(*m.From), timeText(*m.Until), verdict)
	}
	if r.Jobs.Scanned {
		fmt.Fprintf(w, "scheduled jobs: %d run on their own, %d of them not seen while learning\n", r.Jobs.Counted, r.Jobs.Unseen)
	} else {
		fmt.Fprintf(w, "scheduled jobs: %s\n", textsafe.String(r.Jobs.Error))
	}
}

// text says who a staging enforces, with names.
func (s Staging) text(names map[uint32]string) string {
	list := func(uids []uint32) string {
		out := make([]string, len(uids))
		for i, u := range uids {
			out[i] = names[u]
			if out[i] == "" {
				out[i] = fmt.Sprint(u)
			}
		}
		return textsafe.Join(out, ", ")
	}
	switch {
	case len(s.EnforceUIDs) > 0:
		return "staged: enforced " + list(s.EnforceUIDs) + "; audited everyone else"
	case len(s.AuditUIDs) > 0:
		return "staged: audited " + list(s.AuditUIDs) + "; enforced everyone else"
	case s.Mode == plan.ModeEnforce:
		return "enforce mode: everyone enforced"
	}
	return string(s.Mode) + " mode: everyone audited"
}
