package lab

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// ListTable is "nft list table inet NAME" in ns, canonical (see
// CanonicalTable).
func ListTable(t testing.TB, ns *Netns, table string) string {
	t.Helper()
	return CanonicalTable(MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "list", "table", "inet", table))
}

// RuleCounters reads the packet counters of each rule of chain output of
// table inet NAME in ns with nft -j (not with our code), by the rule's
// comment: every counter of the rule, in order.
func RuleCounters(t testing.TB, ns *Netns, table string) map[string][]uint64 {
	t.Helper()
	out := MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "-j", "list", "chain", "inet", table, "output")
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Comment string            `json:"comment"`
				Expr    []json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j: %v\n%s", err, out)
	}
	k := map[string][]uint64{}
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		for _, e := range o.Rule.Expr {
			var c struct {
				Counter *struct{ Packets uint64 } `json:"counter"`
			}
			if json.Unmarshal(e, &c) == nil && c.Counter != nil {
				k[o.Rule.Comment] = append(k[o.Rule.Comment], c.Counter.Packets)
			}
		}
	}
	return k
}

var counterRe = regexp.MustCompile(`packets \d+ bytes \d+`)

// CanonicalTable makes two listings of the same table equal: counters
// zeroed, and set elements sorted (the kernel lists a hash set in any
// order).
func CanonicalTable(listing string) string {
	listing = counterRe.ReplaceAllString(listing, "packets N bytes N")
	var out []string
	lines := strings.Split(listing, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(line, "elements = {") {
			out = append(out, line)
			continue
		}
		body := strings.TrimPrefix(line, "elements = {")
		for !strings.HasSuffix(strings.TrimSpace(body), "}") && i+1 < len(lines) {
			i++
			body += " " + strings.TrimSpace(lines[i])
		}
		body = strings.TrimSuffix(strings.TrimSpace(body), "}")
		var elems []string
		for _, e := range splitElements(body) {
			if e = strings.TrimSpace(e); e != "" {
				elems = append(elems, e)
			}
		}
		sort.Strings(elems)
		out = append(out, "elements = {")
		out = append(out, elems...)
		out = append(out, "}")
	}
	return strings.Join(out, "\n")
}

// splitElements splits on commas outside quotes.
func splitElements(s string) []string {
	var out []string
	inQ := false
	start := 0
	for i, c := range s {
		switch {
		case c == '"':
			inQ = !inQ
		case c == ',' && !inQ:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
