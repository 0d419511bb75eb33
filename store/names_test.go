package store

import (
	"net/netip"
	"slices"
	"testing"
)

// TestNamesForTrustsOnlyResolvers: which names of an address a flow
// carries, by who received the answers.
func TestNamesForTrustsOnlyResolvers(t *testing.T) {
	const alice, mallory, resolved, nscd, nobody = 1000, 4242, 991, 0, 65534
	names := []DNSName{
		{Name: "api.example", UIDs: []uint32{alice}},
		{Name: "evil.example", UIDs: []uint32{mallory}},
		{Name: "cdn.example", UIDs: []uint32{resolved}},
		{Name: "shared.example", UIDs: []uint32{mallory, resolved}},
		{Name: "cached.example", UIDs: []uint32{nscd}},
	}
	resolvers := []uint32{resolved, nscd}
	for _, c := range []struct {
		name      string
		uid       uint32
		resolvers []uint32
		want      []string
	}{
		{"own names only, even with resolver names", alice, resolvers, []string{"api.example"}},
		{"the attacker's own lookup names its own flow", mallory, resolvers, []string{"evil.example", "shared.example"}},
		{"nothing of its own: the resolvers' names, never another user's", nobody, resolvers,
			[]string{"cdn.example", "shared.example", "cached.example"}},
		{"one resolver trusted", nobody, []uint32{resolved}, []string{"cdn.example", "shared.example"}},
		{"no resolver trusted: no borrowed names", nobody, nil, nil},
		{"a resolver's own flow takes its own names", resolved, resolvers, []string{"cdn.example", "shared.example"}},
	} {
		if got := NamesFor(names, c.uid, c.resolvers); !slices.Equal(got, c.want) {
			t.Errorf("%s: uid %d gets %v, want %v", c.name, c.uid, got, c.want)
		}
	}
	if got := NamesFor(nil, nobody, resolvers); got != nil {
		t.Errorf("no names: %v", got)
	}
}

// TestApplyBorrowsNamesOnlyFromResolvers: through the store, a flow of a
// user that resolved nothing takes the names a resolver's answers gave,
// and none of another user's; the batch says who the resolvers are.
func TestApplyBorrowsNamesOnlyFromResolvers(t *testing.T) {
	s := newStore(t)
	ip := netip.MustParseAddr("192.0.2.9")
	b := &Batch{
		DNS: []DNSObservation{
			{IP: ip, Names: []string{"evil.example"}, TTL: 30, UID: 4242, Seen: t0},
			{IP: ip, Names: []string{"api.example", "api.cdn.example"}, TTL: 30, UID: 991, Seen: t0},
		},
		Flows:     []Flow{flow(65534, "192.0.2.9", 443, 1, t0)},
		Resolvers: []uint32{991},
	}
	if err := s.Apply(b); err != nil {
		t.Fatal(err)
	}
	// A later batch without resolvers adds nothing borrowed.
	if err := s.Apply(&Batch{Flows: []Flow{flow(1, "192.0.2.9", 443, 1, t0)}}); err != nil {
		t.Fatal(err)
	}
	flows, err := s.Flows()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32][]string{}
	for _, f := range flows {
		got[f.UID] = f.Hostnames
	}
	if want := []string{"api.example", "api.cdn.example"}; !slices.Equal(got[65534], want) {
		t.Errorf("uid 65534 names %v, want %v", got[65534], want)
	}
	if len(got[1]) != 0 {
		t.Errorf("uid 1 (no resolvers trusted) names %v, want none", got[1])
	}
}
