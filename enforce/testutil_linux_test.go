//go:build linux

package enforce

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// flow is a baseline flow last seen at tp.
func flow(uid uint32, proto uint8, ip string, port uint16, hits uint64, names ...string) store.Flow {
	return pflow(uid, proto, ip, port, hits, tp, names...)
}

// loadText loads the plan's nft text into ns with the nft binary.
func loadText(t *testing.T, p *Plan, ns *lab.Netns) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "egress.nft")
	if err := os.WriteFile(file, []byte(p.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "-f", file)
}

// listTable returns `nft list table` of ns, canonical: set elements sorted
// (the kernel's hash order is random) and counters zeroed.
func listTable(t *testing.T, ns *lab.Netns, table string) string {
	t.Helper()
	out := lab.MustRun(t, "ip", "netns", "exec", ns.Name, "nft", "list", "table", "inet", table)
	return canonical(out)
}

var counterRe = regexp.MustCompile(`packets \d+ bytes \d+`)

func canonical(listing string) string {
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
