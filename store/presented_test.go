package store_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// TestPresentedNamesMergeBounded: the names a flow's connections
// presented are merged across batches, at most MaxPresented kept, the
// rest counted.
func TestPresentedNamesMergeBounded(t *testing.T) {
	st, err := store.Create(filepath.Join(t.TempDir(), "b.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := store.FlowKey{UID: 1, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443}
	now := time.Now()
	var many []string
	for i := range store.MaxPresented + 4 {
		many = append(many, fmt.Sprintf("n%d.lab", i))
	}
	for _, names := range [][]string{{"a.lab"}, {"a.lab", "b.lab"}, many} {
		if err := st.Apply(&store.Batch{Flows: []store.Flow{{FlowKey: k, Hits: 1, FirstSeen: now, LastSeen: now, Presented: names}}}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f := snap.Flows[0]
	if len(f.Presented) != store.MaxPresented || !slices.Equal(f.Presented[:2], []string{"a.lab", "b.lab"}) || f.Dropped != 6 {
		t.Fatalf("presented %v dropped %d", f.Presented, f.Dropped)
	}
}
