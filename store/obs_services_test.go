package store

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestObservationServices: the services of an observation are merged
// across flushes, without repeats, and bounded by MaxServices.
func TestObservationServices(t *testing.T) {
	st, err := Create(filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := FlowKey{UID: 0, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443}
	now := time.Now().UTC()
	obs := func(svcs ...string) []Observation {
		return []Observation{{Kind: ObsDrop, FlowKey: k, Hits: 1, FirstSeen: now, LastSeen: now, Services: svcs}}
	}
	if err := st.AddObservations(obs("a.service"), nil); err != nil {
		t.Fatal(err)
	}
	if err := st.AddObservations(obs("a.service", "b.scope"), nil); err != nil {
		t.Fatal(err)
	}
	got, err := st.Observations()
	if err != nil || len(got) != 1 || !slices.Equal(got[0].Services, []string{"a.service", "b.scope"}) || got[0].Hits != 2 {
		t.Fatalf("observations %+v, %v", got, err)
	}
	var many []string
	for i := range 2 * MaxServices {
		many = append(many, fmt.Sprintf("s%d.service", i))
	}
	if err := st.AddObservations(obs(many...), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Observations(); len(got[0].Services) != MaxServices {
		t.Errorf("%d services kept, want %d", len(got[0].Services), MaxServices)
	}
}
