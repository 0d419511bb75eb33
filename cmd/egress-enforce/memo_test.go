package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/rollout"
	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// memoExport writes an export of flows (in key order, as egress-learn
// writes them) to path.
func memoExport(t *testing.T, path string, flows []store.Flow) {
	t.Helper()
	flows = slices.Clone(flows)
	slices.SortFunc(flows, func(a, b store.Flow) int { return a.FlowKey.Compare(b.FlowKey) })
	data, err := json.Marshal(store.Export{Format: store.ExportFormat, Host: "web1", Exported: time.Now(), Users: map[uint32]string{}, Flows: flows})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// memoFlowsFor are n flows to addresses of 11.0.0.0/8, some with names,
// and the lab's flows of nobody to the server's 8080.
func memoFlowsFor(n int) []store.Flow {
	now := time.Now().Add(-time.Hour)
	out := []store.Flow{{FlowKey: store.FlowKey{UID: 65534, Proto: 6, IP: netip.MustParseAddr(lab.ServerIP4), Port: 8080},
		Hits: 3, FirstSeen: now, LastSeen: now, Processes: []string{"curl"}}}
	for i := range n {
		f := store.Flow{FlowKey: store.FlowKey{UID: 1000 + uint32(i%3), Proto: 6, IP: netip.AddrFrom4([4]byte{11, byte(i >> 8), byte(i), 1}), Port: 443},
			Hits: uint64(1 + i%7), FirstSeen: now, LastSeen: now, Processes: []string{"java"}}
		if i%4 == 0 {
			f.Hostnames = []string{fmt.Sprintf("svc%d.example.net", i%50)}
		}
		out = append(out, f)
	}
	return out
}

// applyFrom runs apply --from export and returns its stdout and log.
func (l *rolloutLab) applyFrom(t *testing.T, export string) (string, string) {
	t.Helper()
	stdout, stderr, err := run(enforceBin, l.env, "apply", "--mode", "audit", "--from", export)
	if err != nil {
		t.Fatalf("apply --from: %v\n%s\n%s", err, stdout, stderr)
	}
	return stdout, stderr
}

// TestApplyFromMemoThroughTheCLI: the second apply --from of an export
// changed in a few flows reads it against the memo of the first (and says
// so), goes in as a delta, and leaves the table a full read and apply of
// the same export makes. A damaged memo, or one of another generation
// (after a rollback), is not used: the log says why, the table is right.
func TestApplyFromMemoThroughTheCLI(t *testing.T) {
	l := newRolloutLab(t)
	dir := t.TempDir()
	flows := memoFlowsFor(600)
	first, second := filepath.Join(dir, "first.json"), filepath.Join(dir, "second.json")
	memoExport(t, first, flows[:500])
	changed := slices.Concat(flows[:200], flows[250:], []store.Flow{{FlowKey: store.FlowKey{UID: 65534, Proto: 6, IP: netip.MustParseAddr(lab.ServerIP4), Port: 8081},
		Hits: 2, FirstSeen: time.Now(), LastSeen: time.Now()}})
	changed[300].Hits += 10 // a changed comment
	memoExport(t, second, changed)

	if _, log := l.applyFrom(t, first); !strings.Contains(log, "the export was read whole: no table was applied from an export before") {
		t.Errorf("the first apply's log:\n%s", log)
	}
	out, log := l.applyFrom(t, second)
	if !strings.Contains(log, "the export was read against the one applied before") || !strings.Contains(out, "as a delta from generation 1") {
		t.Errorf("the second apply says:\n%s\n%s", out, log)
	}
	if !reaches(l.nobody, 8081) {
		t.Error("the flow the second export added is not allowed")
	}
	withMemo := l.listing(t)

	// The same export read whole (no memo) and applied whole.
	memo := rollout.MemoPath(l.db, nft.Target{Netns: l.pair.Client.Name}, "egress")
	if err := os.Remove(memo); err != nil {
		t.Fatalf("no memo beside the store: %v", err)
	}
	lab.MustRun(t, "ip", "netns", "exec", l.pair.Client.Name, "nft", "delete", "table", "inet", "egress")
	if _, log := l.applyFrom(t, second); !strings.Contains(log, "the export was read whole: no memo of the export applied before") {
		t.Errorf("the apply without a memo says:\n%s", log)
	}
	if whole := l.listing(t); whole != withMemo {
		t.Errorf("read against the memo:\n%s\nread whole:\n%s", withMemo, whole)
	}

	// A damaged memo.
	data, err := os.ReadFile(memo)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-5] ^= 0x20
	if err := os.WriteFile(memo, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, log := l.applyFrom(t, first); !strings.Contains(log, "the export was read whole: the memo of the export applied before is damaged") {
		t.Errorf("the apply with a damaged memo says:\n%s", log)
	}
	firstTable := l.listing(t)
	// A memo of a generation the table no longer is: rolled back.
	l.run(t, "rollback")
	if _, log := l.applyFrom(t, first); !strings.Contains(log, "the export was read whole: the memo is of generation 4, the table is generation 5") {
		t.Errorf("the apply after a rollback says:\n%s", log)
	}
	if got := l.listing(t); got != firstTable {
		t.Errorf("after the rollback and apply:\n%s\nwant:\n%s", got, firstTable)
	}
}
