//go:build linux

package monitor

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// RefusedName is a name the name check refused on one destination:
// connections of a user that presented it where the user learned other
// names ("" for a connection that presented none).
type RefusedName struct {
	UID       uint32     `json:"uid"`
	User      string     `json:"user"`
	Proto     string     `json:"proto"`
	IP        netip.Addr `json:"ip"`
	Port      uint16     `json:"port"`
	Presented string     `json:"presented"`
	Kind      string     `json:"kind"`    // tls, http or none
	Verdict   string     `json:"verdict"` // mismatch or no_name
	Dropped   uint64     `json:"dropped"` // connections
	Audited   uint64     `json:"audited"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
}

// refusedNames reads the name check's refusals seen since (zero: all),
// most refused first, and the refused connections the store's bound left
// out.
func refusedNames(st *store.Store, since time.Time, userName func(uint32) string) ([]RefusedName, uint64, error) {
	rs, lost, err := st.Refusals()
	if err != nil {
		return nil, 0, err
	}
	out := []RefusedName{}
	for _, r := range rs {
		if !since.IsZero() && r.LastSeen.Before(since) {
			continue
		}
		n := RefusedName{UID: r.UID, User: fmt.Sprint(r.UID), Proto: plan.ProtoName(r.Proto), IP: r.IP, Port: r.Port, Presented: r.Name,
			Kind: r.Kind, Verdict: r.Verdict, Dropped: r.Dropped, Audited: r.Audited, FirstSeen: r.FirstSeen, LastSeen: r.LastSeen}
		if userName != nil {
			n.User = userName(r.UID)
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b RefusedName) int {
		return cmp.Or(cmp.Compare(b.Dropped+b.Audited, a.Dropped+a.Audited), cmp.Compare(a.UID, b.UID), a.IP.Compare(b.IP),
			cmp.Compare(a.Port, b.Port), strings.Compare(a.Presented, b.Presented))
	})
	return out, lost, nil
}

// writeRefused writes the names refused, at most top.
func (s *DeniedSummary) writeRefused(b *strings.Builder, top int) {
	if len(s.RefusedNames) == 0 && s.RefusedUnrecorded == 0 {
		return
	}
	fmt.Fprintf(b, "\nnames refused by the name check (connections; \"egress-enforce namecheck\"):\n")
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  USER\tDESTINATION\tPRESENTED\tDROPPED\tAUDITED\tLAST SEEN")
	for i, n := range s.RefusedNames {
		if i == top {
			fmt.Fprintf(tw, "  ... %d more\n", len(s.RefusedNames)-top)
			break
		}
		presented := n.Kind + " " + textsafe.String(n.Presented)
		if n.Presented == "" {
			presented = n.Kind + " (no name)"
		}
		fmt.Fprintf(tw, "  %s\t%s/%d %s\t%s\t%d\t%d\t%s\n", textsafe.String(n.User), n.Proto, n.Port, n.IP, presented, n.Dropped, n.Audited,
			n.LastSeen.Local().Format(time.DateTime))
	}
	_ = tw.Flush()
	if s.RefusedUnrecorded > 0 {
		fmt.Fprintf(b, "  not in this list: %d refused connections the store's bound left out\n", s.RefusedUnrecorded)
	}
}
