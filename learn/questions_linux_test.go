//go:build linux

package learn

import (
	"path/filepath"
	"testing"

	"github.com/egresskit/egress/internal/lab"
	"github.com/egresskit/egress/store"
)

// TestLearnRecordsQuestions: every question a user asks is recorded with
// its answer code, NXDOMAIN included (a search domain's tries), by user.
func TestLearnRecordsQuestions(t *testing.T) {
	lab.Require(t, "dnsmasq", "dig")
	p := lab.NewPair(t)
	lab.StartDNS(t, p.Server, []string{lab.ServerIP4}, lab.DNSRecord{Name: "www.example.lab", IPs: []string{"10.77.0.80"}})
	cg := lab.NewCgroup(t)
	db := filepath.Join(t.TempDir(), "baseline.db")
	r := startRun(t, Config{DB: db, Cgroup: cg.Path})
	alice := lab.As{UID: 1000, GID: 1000, Netns: p.Client, Cgroup: cg}
	bob := lab.As{UID: 1001, GID: 1001, Netns: p.Client, Cgroup: cg}
	alice.MustRun(t, "dig", "+time=2", "+tries=2", "@"+lab.ServerIP4, "WWW.Example.LAB.")
	alice.MustRun(t, "dig", "+time=2", "+tries=2", "@"+lab.ServerIP4, "www.example.lab.corp.lab", "AAAA")
	bob.MustRun(t, "dig", "+time=2", "+tries=2", "@"+lab.ServerIP4, "other.lab", "TXT")
	r.stop(t)

	s, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	qs, unrec, err := s.Questions()
	if err != nil || unrec != 0 {
		t.Fatal(err, unrec)
	}
	got := map[string]store.Question{}
	for _, q := range qs {
		got[q.Name+"/"+string(rune('0'+q.UID-1000))] = q
	}
	if q, ok := got["www.example.lab/0"]; !ok || q.Rcodes["0"] != 1 || q.QTypes[0] != 1 {
		t.Errorf("alice's name: %+v (all: %+v)", q, qs)
	}
	if q, ok := got["www.example.lab.corp.lab/0"]; !ok || q.Rcodes["3"] != 1 || q.QTypes[0] != 28 {
		t.Errorf("alice's NXDOMAIN try: %+v (all: %+v)", q, qs)
	}
	if q, ok := got["other.lab/1"]; !ok || q.QTypes[0] != 16 {
		t.Errorf("bob's: %+v (all: %+v)", q, qs)
	}
	if len(qs) != 3 {
		t.Errorf("questions: %+v", qs)
	}
}
