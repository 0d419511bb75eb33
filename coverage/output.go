package coverage

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/egresskit/egress/internal/textsafe"
)

// verdict judges the soak from its jobs.
func verdict(c *Coverage) Verdict {
	v := Verdict{NoNextRun: []string{}}
	for _, j := range c.Jobs {
		if !j.Counted {
			continue
		}
		v.Jobs++
		if j.SeenDuringSoak {
			continue
		}
		v.Unseen++
		if j.DueBy == nil {
			v.NoNextRun = append(v.NoNextRun, j.Name)
		} else if v.SoakUntil == nil || j.DueBy.After(*v.SoakUntil) {
			v.SoakUntil, v.LastDue = j.DueBy, j.Name
		}
	}
	v.Covered = v.Unseen == 0 && c.LearningRuns > 0
	v.Text = verdictText(c, v)
	return v
}

func verdictText(c *Coverage, v Verdict) string {
	var b strings.Builder
	switch {
	case v.Jobs == 0 && len(c.Jobs) == 0:
		return "no scheduled job found: nothing for the soak to wait for"
	case v.Jobs == 0:
		return fmt.Sprintf("none of the %d job(s) found runs on its own here (see the notes): nothing for the soak to wait for", len(c.Jobs))
	case c.LearningRuns == 0:
		fmt.Fprintf(&b, "no learning run yet: none of the %d scheduled job(s) was seen", v.Jobs)
	case v.Covered:
		return fmt.Sprintf("the soak covers every scheduled job: all %d ran while learning", v.Jobs)
	default:
		fmt.Fprintf(&b, "%d of %d scheduled job(s) have not run while learning", v.Unseen, v.Jobs)
	}
	if v.SoakUntil != nil {
		fmt.Fprintf(&b, "; keep learning until after %s (%s is due by then)", v.SoakUntil.Local().Format(time.DateTime), sanitize(v.LastDue))
	}
	if n := len(v.NoNextRun); n > 0 {
		fmt.Fprintf(&b, "; %d cannot be waited for (they run at boot, or their next run is unknown): %s; reboot while learning, or run them by hand while learning",
			n, sanitize(strings.Join(v.NoNextRun, ", ")))
	}
	return b.String()
}

// WriteJSON writes the coverage as one JSON document.
func WriteJSON(w io.Writer, c *Coverage) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

// WriteText writes the jobs as a table, their notes, and the verdict.
func WriteText(w io.Writer, c *Coverage) error {
	fmt.Fprintf(w, "scheduled jobs at %s; %s\n\n", c.Now.Local().Format(time.DateTime), soakLine(c))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSTATE\tSCHEDULE\tUNIT/COMMAND\tLAST RUN\tNEXT RUN\tSEEN\tCONNECTS")
	for _, j := range c.Jobs {
		what := j.Command
		if j.Unit != "" {
			what = j.Unit
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sanitize(j.Name), j.Kind, j.State, sanitize(orDash(j.Schedule)),
			sanitize(clip(orDash(what), 60)), when(j.LastRun, j.LastRunFrom), when(j.NextRun, ""), seen(j), connects(j))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, j := range c.Jobs {
		for _, n := range j.Notes {
			notes = append(notes, sanitize(j.Name)+": "+sanitize(n))
		}
	}
	for _, n := range c.Notes {
		notes = append(notes, sanitize(n))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintln(w, "  "+n)
		}
	}
	_, err := fmt.Fprintf(w, "\nverdict: %s\n", c.Verdict.Text)
	return err
}

// WriteSummary writes what a report shows of the coverage: the verdict
// and the jobs not seen yet.
func WriteSummary(w io.Writer, c *Coverage) error {
	fmt.Fprintf(w, "\nscheduled jobs (egress-learn coverage): %s\n", c.Verdict.Text)
	shown := 0
	for _, j := range c.Jobs {
		if !j.Counted || j.SeenDuringSoak {
			continue
		}
		if shown++; shown > 20 {
			fmt.Fprintf(w, "  ... and %d more\n", c.Verdict.Unseen-20)
			break
		}
		fmt.Fprintf(w, "  not seen yet: %s (%s), next run %s\n", sanitize(j.Name), sanitize(clip(orDash(j.Schedule), 60)), when(j.NextRun, ""))
	}
	return nil
}

func soakLine(c *Coverage) string {
	if c.SoakStart == nil {
		return "no learning run yet"
	}
	return fmt.Sprintf("soak since %s (%d learning run(s))", c.SoakStart.Local().Format(time.DateTime), c.LearningRuns)
}

func when(t *time.Time, from string) string {
	if t == nil {
		return "-"
	}
	s := t.Local().Format("2006-01-02 15:04")
	if from != "" {
		s += " (" + from + ")"
	}
	return s
}

func seen(j Job) string {
	switch {
	case !j.Counted:
		return "-"
	case j.SeenDuringSoak:
		return "yes (" + j.SeenBy + ")"
	}
	return "NO"
}

func connects(j Job) string {
	if !j.Connected {
		return "-"
	}
	return fmt.Sprintf("%d destination(s)", len(j.Destinations))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clip cuts s to n characters, the last "…"; a byte that is not UTF-8
// counts as one and stays (sanitize shows it).
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	k := 0
	for i := range s {
		if k == n-1 {
			return s[:i] + "…"
		}
		k++
	}
	return s
}

// sanitize escapes what a terminal would interpret (control characters,
// escape sequences), bytes that are not UTF-8 and the tabs the table
// uses, as every text output does (textsafe): names and commands come
// from files a user may write (a crontab).
func sanitize(s string) string { return textsafe.String(s) }
