package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/dnspolicy"
	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// dnsDenied is the DNS part of denied and reconcile: the names the DNS
// policy stopped or audited, by user (dns-policy watch records them).
type dnsDenied struct {
	Since      time.Time          `json:"since,omitzero"`
	Unrecorded uint64             `json:"unrecorded"` // reports the store had no room for
	Summary    dnspolicy.Summary  `json:"summary"`
	Additions  []dnsAddition      `json:"additions"` // reconcile: names to allow, reviewed
	Withheld   []dnspolicy.Parent `json:"withheld"`  // parents with a tunnel signature: not proposed
	users      config.UserNames
}

// dnsAddition is a denied name proposed for dns_allow.
type dnsAddition struct {
	UID      uint32    `json:"uid"`
	User     string    `json:"user"`
	Name     string    `json:"name"`
	Hits     uint64    `json:"hits"`
	LastSeen time.Time `json:"last_seen"`
}

// readDNSDenied reads the denied names seen within since (0: all).
func readDNSDenied(st *store.Store, since time.Duration, now time.Time) (*dnsDenied, error) {
	d := &dnsDenied{users: config.UserNames{}, Additions: []dnsAddition{}, Withheld: []dnspolicy.Parent{}}
	if since > 0 {
		d.Since = now.Add(-since)
	}
	recs, unrec, err := st.DNSDenials(d.Since)
	if err != nil {
		return nil, err
	}
	d.Unrecorded = unrec
	counts := make([]dnspolicy.Count, 0, len(recs))
	for _, r := range recs {
		counts = append(counts, dnspolicy.Count{UID: r.UID, Name: r.Name, Hits: r.Hits, Dropped: r.Dropped, Malformed: r.Malformed,
			First: r.FirstSeen, Last: r.LastSeen})
	}
	d.Summary = dnspolicy.Summarize(counts, dnspolicy.SummaryOptions{TopParents: 1 << 20, TopNames: 1 << 20})
	tunnel := map[[2]any]bool{}
	for _, u := range d.Summary.Users {
		for _, p := range u.Parents {
			if p.Tunnel {
				tunnel[[2]any{u.UID, p.Domain}] = true
				d.Withheld = append(d.Withheld, p)
			}
		}
	}
	for i := range d.Summary.Users {
		u := &d.Summary.Users[i]
		u.Parents = u.Parents[:min(len(u.Parents), 5)]
		u.Top = topOutside(u.Top, tunnel, u.UID, 10)
	}
	for _, r := range recs {
		if r.Name == "" || tunnel[[2]any{r.UID, dnspolicy.ParentOf(r.Name)}] {
			continue
		}
		d.Additions = append(d.Additions, dnsAddition{UID: r.UID, User: d.users.Name(r.UID), Name: r.Name, Hits: r.Hits, LastSeen: r.LastSeen})
	}
	return d, nil
}

// writeSummary writes the denied names per user (for denied); mode is the
// configured dns_policy.
func (d *dnsDenied) writeSummary(w io.Writer, mode string) {
	if len(d.Summary.Users) == 0 {
		if mode == string(dnspolicy.Off) {
			fmt.Fprintln(w, "\nDNS queries: dns_policy is off, so no query is checked and none is recorded as not allowed")
			return
		}
		fmt.Fprintf(w, "\nDNS queries not allowed by dns_policy (%s): none recorded (is \"egress-enforce dns-policy watch\" running?)\n", mode)
		return
	}
	fmt.Fprintln(w, "\nDNS queries not allowed by dns_policy, by user:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  USER\tUID\tQUERIES\tDROPPED\tMALFORMED\tNAMES\tMOST FREQUENT PARENT DOMAINS")
	for _, u := range d.Summary.Users {
		var ps []string
		for _, p := range u.Parents {
			s := fmt.Sprintf("%s (%d names, %d queries)", textsafe.String(p.Domain), p.Names, p.Queries)
			if p.Tunnel {
				s += " TUNNELLING SIGNATURE"
			}
			ps = append(ps, s)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%s\n", textsafe.String(d.users.Name(u.UID)), u.UID, u.Queries, u.Dropped, u.Malformed, u.Names, orDash(strings.Join(ps, "; ")))
	}
	_ = tw.Flush()
	for _, u := range d.Summary.Users {
		tunnel := map[string]bool{}
		for _, p := range u.Parents {
			if p.Tunnel {
				tunnel[p.Domain] = true
				fmt.Fprintf(w, "  ! %s (uid %d) asked for %d distinct names under %s: the signature of DNS tunnelling\n",
					textsafe.String(d.users.Name(u.UID)), u.UID, p.Names, textsafe.String(p.Domain))
			}
		}
		var names []string
		for _, c := range u.Top {
			if c.Name != "" && !tunnel[dnspolicy.ParentOf(c.Name)] {
				names = append(names, fmt.Sprintf("%s (%d)", textsafe.String(c.Name), c.Hits))
			}
		}
		if len(names) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", textsafe.String(d.users.Name(u.UID)), strings.Join(names, ", "))
		}
	}
	if d.Unrecorded > 0 {
		fmt.Fprintf(w, "  %d reports found no room in the store (see dns-policy status for the kernel's counts)\n", d.Unrecorded)
	}
}

// writeAdditions writes the names reconcile proposes, apart.
func (d *dnsDenied) writeAdditions(w io.Writer) {
	if len(d.Additions) == 0 && len(d.Withheld) == 0 {
		return
	}
	fmt.Fprintln(w, "\nDNS names denied by dns_policy (never learned; add to dns_allow after review):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, a := range d.Additions {
		fmt.Fprintf(tw, "  + %s\t%s\t%d queries\tlast %s\n", textsafe.String(a.User), textsafe.String(a.Name), a.Hits, a.LastSeen.Local().Format(time.DateTime))
	}
	_ = tw.Flush()
	for _, p := range d.Withheld {
		fmt.Fprintf(w, "  not proposed: %d names under %s (tunnelling signature)\n", p.Names, textsafe.String(p.Domain))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// dnsAdditionsFor reads the denied names for reconcile; nil when
// dns_policy is off and nothing was recorded.
func dnsAdditionsFor(e *env) (*dnsDenied, error) {
	st, err := e.ReadStore()
	if err != nil {
		return nil, err
	}
	d, err := readDNSDenied(st, 0, time.Now())
	if err != nil {
		return nil, err
	}
	if len(d.Additions) == 0 && len(d.Withheld) == 0 && e.Cfg.DNSPolicy == string(dnspolicy.Off) {
		return nil, nil
	}
	return d, nil
}

// topOutside keeps the first n names not under a tunnel's parent (those
// are summed up by their parent).
func topOutside(cs []dnspolicy.Count, tunnel map[[2]any]bool, uid uint32, n int) []dnspolicy.Count {
	out := []dnspolicy.Count{}
	for _, c := range cs {
		if len(out) == n {
			break
		}
		if !tunnel[[2]any{uid, dnspolicy.ParentOf(c.Name)}] {
			out = append(out, c)
		}
	}
	return out
}
