//go:build linux

package enforce

import (
	"os"
	"path/filepath"
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
	return lab.ListTable(t, ns, table)
}
