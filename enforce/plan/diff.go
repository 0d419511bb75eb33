package plan

import (
	"fmt"
	"io"
	"strings"
)

// Diff is what applying a plan would change.
type Diff struct {
	Table        string    `json:"table"`
	Target       string    `json:"target"`
	Present      bool      `json:"present"` // a table is installed now
	ModeFrom     Mode      `json:"mode_from,omitempty"`
	ModeTo       Mode      `json:"mode_to"`
	Added        []Element `json:"added"`
	Removed      []Element `json:"removed"`
	RulesAdded   []string  `json:"rules_added"`
	RulesRemoved []string  `json:"rules_removed"`
}

// Empty reports whether applying would change nothing.
func (d *Diff) Empty() bool {
	return d.Present && d.ModeFrom == d.ModeTo && len(d.Added) == 0 && len(d.Removed) == 0 &&
		len(d.RulesAdded) == 0 && len(d.RulesRemoved) == 0
}

// Installed is what the kernel holds of a table, as far as a diff needs
// it.
type Installed struct {
	Target   string               // the network namespace, for messages
	Present  bool                 // the table is there
	Mode     Mode                 // as its default rules say
	Elements map[string][]Element // by set name
	Rules    []string             // rule comments, in order
}

// Compare says what applying p over the installed table would change.
// Elements are compared by key (their comments, with hit counts, change
// all the time); rules by their comments, which name what they allow.
func Compare(st Installed, p *Plan) *Diff {
	d := &Diff{Table: p.Table, Target: st.Target, Present: st.Present, ModeFrom: st.Mode, ModeTo: p.Mode,
		Added: []Element{}, Removed: []Element{}, RulesAdded: []string{}, RulesRemoved: []string{}}
	for _, s := range p.Sets {
		have := map[string]bool{}
		for _, e := range st.Elements[s.Name] {
			have[e.Key()] = true
		}
		want := map[string]bool{}
		for _, e := range s.Elements {
			want[e.Key()] = true
			if !have[e.Key()] {
				d.Added = append(d.Added, e)
			}
		}
		for _, e := range st.Elements[s.Name] {
			if !want[e.Key()] {
				d.Removed = append(d.Removed, e)
			}
		}
	}
	// Rules by their comments, in sets: a rule per always_allow entry of
	// the configuration makes as many as it lists.
	installed := make(map[string]bool, len(st.Rules))
	for _, c := range st.Rules {
		installed[c] = true
	}
	planned := make(map[string]bool, len(p.Rules))
	for _, r := range p.Rules {
		planned[r.Comment] = true
		if !installed[r.Comment] {
			d.RulesAdded = append(d.RulesAdded, r.Comment)
		}
	}
	for _, c := range st.Rules {
		if !planned[c] {
			d.RulesRemoved = append(d.RulesRemoved, c)
		}
	}
	return d
}

// Write prints the diff for people.
func (d *Diff) Write(w io.Writer) error {
	var b strings.Builder
	switch {
	case !d.Present:
		fmt.Fprintf(&b, "table inet %s is not installed in %s: apply would create it in %s mode\n", d.Table, d.Target, d.ModeTo)
	case d.Empty():
		fmt.Fprintf(&b, "table inet %s in %s is up to date (%s mode)\n", d.Table, d.Target, d.ModeTo)
	case d.ModeFrom != d.ModeTo:
		fmt.Fprintf(&b, "mode: %s -> %s\n", d.ModeFrom, d.ModeTo)
	}
	for _, e := range d.Added {
		fmt.Fprintf(&b, "+ %s  # %s\n", e.Key(), e.Comment)
	}
	for _, e := range d.Removed {
		fmt.Fprintf(&b, "- %s  # %s\n", e.Key(), e.Comment)
	}
	for _, r := range d.RulesAdded {
		fmt.Fprintf(&b, "+ rule: %s\n", r)
	}
	for _, r := range d.RulesRemoved {
		fmt.Fprintf(&b, "- rule: %s\n", r)
	}
	if d.Present && !d.Empty() {
		fmt.Fprintf(&b, "%d element(s) added, %d removed; %d rule(s) added, %d removed\n",
			len(d.Added), len(d.Removed), len(d.RulesAdded), len(d.RulesRemoved))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
