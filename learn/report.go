package learn

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egresskit/egress/internal/textsafe"
	"github.com/egresskit/egress/store"
)

// ProtoName is the nft name of a protocol number (store.ProtoName).
var ProtoName = store.ProtoName

// ReportFlow is one flow as the report shows it.
type ReportFlow struct {
	UID       uint32    `json:"uid"`
	User      string    `json:"user"`
	Proto     string    `json:"proto"`
	IP        string    `json:"ip"`
	Port      uint16    `json:"port"`
	Hostnames []string  `json:"hostnames"`
	Hits      uint64    `json:"hits"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Processes are the executables that made the connections; Comms the
	// process names (comm) that differ from their executable's.
	Processes []string            `json:"processes"`
	Comms     []store.ProcessComm `json:"comms"`
	Cgroups   []string            `json:"cgroups"`
	// Services are the services of the cgroups (ReportOptions.Service),
	// as per-service rules name them; a flow of no service has none.
	Services []string `json:"services"`
	// Presented are the names connections presented (TLS SNI, HTTP
	// Host); Fronted those of them none of the DNS names is: a name
	// reached through another name's address (domain fronting).
	Presented []string `json:"presented,omitempty"`
	Fronted   []string `json:"fronted,omitempty"`
	// State: approved (in the enforced baseline), candidate (seen since,
	// not reviewed), stale (approved, not seen for the stale period) or
	// retired (removed by a reconcile).
	State    string `json:"state"`
	Approved uint64 `json:"approved_generation,omitempty"`
}

// ReportOptions select and name what the report shows.
type ReportOptions struct {
	// UID, when set, keeps only that user's flows.
	UID *uint32
	// UserName names a UID (unknown ones as numbers).
	UserName func(uint32) string
	// Now and StaleAfter classify flows (StaleAfter 0: none is stale).
	Now        time.Time
	StaleAfter time.Duration
	// Service names the service of a cgroup path ("": none), as the
	// per-service rules cut it; nil: no services shown.
	Service func(cgroup string) string
}

// services are the distinct services of a flow's cgroups, sorted.
func (o *ReportOptions) services(cgroups []string) []string {
	out := []string{}
	if o.Service == nil {
		return out
	}
	for _, c := range cgroups {
		if s := o.Service(c); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// BuildReport turns stored flows into report rows, ordered by UID, then
// address, protocol and port.
func BuildReport(flows []store.Flow, o ReportOptions) []ReportFlow {
	// The order of the indexes is sorted, not a copy of the flows (a
	// million flows are 250 MB to copy and move).
	order := reportOrder(flows, &o)
	out := make([]ReportFlow, 0, len(order))
	for _, i := range order {
		out = append(out, reportRow(&flows[i], &o))
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// WriteReportJSON writes the rows as a JSON array.
func WriteReportJSON(w io.Writer, rows []ReportFlow) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// WriteReportTable writes the rows as a table per user, a line about the
// learning runs, and each user's convergence.
func WriteReportTable(out io.Writer, rows []ReportFlow, runs []store.Run, conv []store.Convergence, now time.Time) error {
	// Buffered: the table writer writes each line on its own (a write(2)
	// per line took a quarter of a 100,000-flow report).
	w := bufio.NewWriterSize(out, 256<<10)
	if err := writeReportTable(w, rows, runs, conv, now); err != nil {
		return err
	}
	return w.Flush()
}

func writeReportTable(w io.Writer, rows []ReportFlow, runs []store.Run, conv []store.Convergence, now time.Time) error {
	if len(rows) == 0 {
		io.WriteString(w, noFlows)
	}
	// Each user's table goes through a tabwriter without its "presented:"
	// lines, which are put back under their rows after: a line without a
	// tab would end tabwriter's column blocks and misalign the rows after
	// it. No cell holds a newline (reportText), so the table has one line
	// per row.
	var table bytes.Buffer
	for i := 0; i < len(rows); {
		j := i
		for j < len(rows) && rows[j].UID == rows[i].UID {
			j++
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "user %s (uid %d): %d flow(s)\n", reportText(rows[i].User), rows[i].UID, j-i)
		table.Reset()
		tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  DESTINATION\tHOSTNAMES\tPROTO/PORT\tHITS\tFIRST SEEN\tLAST SEEN\tPROCESSES\tSERVICES\tSTATE")
		for _, r := range rows[i:j] {
			writeReportRow(tw, &r)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		lines := strings.SplitAfter(table.String(), "\n")
		io.WriteString(w, lines[0])
		for k, r := range rows[i:j] {
			io.WriteString(w, lines[k+1])
			if len(r.Presented) > 0 {
				fmt.Fprintf(w, "    presented: %s", reportText(strings.Join(r.Presented, ",")))
				if len(r.Fronted) > 0 {
					fmt.Fprintf(w, "; FRONTED: %s is not among the DNS names", reportText(strings.Join(r.Fronted, ",")))
				}
				fmt.Fprintln(w)
			}
		}
		i = j
	}
	writeReportTrailer(w, runs, conv, now)
	return nil
}

// writeReportRow writes a row's cells, tab-separated.
func writeReportRow(tw io.Writer, r *ReportFlow) {
	names := strings.Join(r.Hostnames, ",")
	if names == "" {
		names = "-"
	}
	state := r.State
	if r.Approved != 0 {
		state = fmt.Sprintf("%s (gen %d)", state, r.Approved)
	}
	svcs := strings.Join(r.Services, ",")
	if svcs == "" {
		svcs = "-"
	}
	fmt.Fprintf(tw, "  %s\t%s\t%s/%d\t%d\t%s\t%s\t%s\t%s\t%s\n", r.IP, reportText(names), r.Proto, r.Port, r.Hits,
		r.FirstSeen.Local().Format(time.DateTime), r.LastSeen.Local().Format(time.DateTime),
		reportText(strings.Join(store.ProcessNames(r.Processes, r.Comms), ", ")), reportText(svcs), state)
}

// reportText is s as the table shows it (textsafe: a name cannot make
// cells, lines or terminal commands of its own).
func reportText(s string) string { return textsafe.String(s) }

const noFlows = "no flows recorded (of this user): egress-learn run records them\n"

// writeReportTrailer writes the line about the learning runs and each
// user's convergence.
func writeReportTrailer(w io.Writer, runs []store.Run, conv []store.Convergence, now time.Time) {
	if len(runs) > 0 {
		var events, lost, dnsLost uint64
		var dns store.DNSMatch
		for _, r := range runs {
			events += r.Events
			lost += r.LostEvents
			dnsLost += r.DNSLost
			dns = dns.Plus(r.DNS)
		}
		first, last := runs[0], runs[len(runs)-1]
		state := "finished"
		if !last.Finished {
			state = "running or interrupted, last flush"
		}
		fmt.Fprintf(w, "\n%d learning run(s) from %s to %s (%s): %d connection attempts recorded, %d lost (the kernel could not deliver them)\n",
			len(runs), first.Start.Local().Format(time.DateTime), last.End.Local().Format(time.DateTime), state, events, lost)
		fmt.Fprintf(w, "  DNS answers: %d used, %d ignored (%d with no matching query, %d with another question, %d from another server, "+
			"%d whose query was pushed out, %d malformed); %d DNS messages lost (the kernel could not deliver them)\n",
			dns.Matched, dns.Ignored(), dns.NoQuery, dns.Mismatch, dns.OtherServer, dns.Evicted, dns.Malformed, dnsLost)
	}
	if len(conv) > 0 {
		fmt.Fprintf(w, "\nconvergence (new destinations per day, the last %d days, oldest first):\n", len(conv[0].NewPerDay))
		for _, c := range conv {
			days := make([]string, len(c.NewPerDay))
			for i, n := range c.NewPerDay {
				days[i] = fmt.Sprint(n)
			}
			state := "stable"
			if !c.Stable {
				state = "still learning"
			}
			fmt.Fprintf(w, "  %s (uid %d): %d destinations, last new %s ago, per day [%s]: %s\n",
				reportText(c.User), c.UID, c.Flows, now.Sub(c.LastNew).Round(time.Second), strings.Join(days, " "), state)
		}
	}
}
