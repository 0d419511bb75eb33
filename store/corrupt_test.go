package store

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/store/storetest"
	bolt "go.etcd.io/bbolt"
)

// fillRealStore writes a store with some of everything: flows, DNS names,
// runs, generations with plans, observations and per-minute denials, all
// at fixed times so the bytes are the same at every run.
func fillRealStore(tb testing.TB, path string) {
	tb.Helper()
	s, err := Create(path, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	run, err := s.BeginRun(Run{Start: t0, Cgroup: "/sys/fs/cgroup/unified/test"})
	if err != nil {
		tb.Fatal(err)
	}
	b := &Batch{Run: &run}
	for i := range 300 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i / 250), byte(i % 250)})
		b.Flows = append(b.Flows, flow(uint32(1000+i%7), ip.String(), uint16(443+i%3), uint64(i+1), t0, "curl", "wget"))
		if i%5 == 0 {
			b.DNS = append(b.DNS, DNSObservation{IP: ip, Names: []string{fmt.Sprintf("host%d.example.com", i)}, TTL: 60, UID: 1000, Seen: t0})
		}
	}
	run.End, run.Events, run.Finished = t0.Add(time.Hour), 300, true
	if err := s.Apply(b); err != nil {
		tb.Fatal(err)
	}
	for i := range 3 {
		plan := []byte(strings.Repeat(fmt.Sprintf(`{"generation":%d,"rules":["counter accept"]}`, i), 50))
		if _, err := s.AddGeneration(Generation{Time: t0.Add(time.Duration(i) * time.Hour), Table: "egress", Mode: "enforce",
			State: GenApplied, Command: "egress-enforce apply"}, plan); err != nil {
			tb.Fatal(err)
		}
	}
	var obs []Observation
	minutes := map[int64]DenialCount{}
	for i := range 200 {
		k := FlowKey{UID: uint32(i % 4), Proto: 17, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Port: uint16(1000 + i)}
		obs = append(obs, Observation{Kind: ObsDrop, FlowKey: k, Hits: uint64(i + 1), FirstSeen: t0, LastSeen: t0.Add(time.Minute)})
	}
	for m := range int64(100) {
		minutes[t0.Unix()/60+m] = DenialCount{Drop: uint64(m), Audit: 1}
	}
	if err := s.AddObservations(obs, minutes); err != nil {
		tb.Fatal(err)
	}
}

// exerciseStore runs every reader and a few writers on the file at path.
// Each may fail, but only with an error that names the file.
func exerciseStore(t *testing.T, path string) {
	t.Helper()
	check := func(what string, err error) {
		t.Helper()
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("%s: the error does not name the file: %v", what, err)
		}
	}
	r, err := Open(path, Options{LockTimeout: time.Second})
	check("open", err)
	if err == nil {
		_, err = r.Info()
		check("info", err)
		_, err = r.Snapshot()
		check("snapshot", err)
		_, err = r.FlowKeys()
		check("flow keys", err)
		_, err = r.Observations()
		check("observations", err)
		_, err = r.Denials(0, 1<<30)
		check("denials", err)
		_, err = r.FlowNames([]FlowKey{{UID: 1000, Proto: 6, IP: netip.MustParseAddr("10.1.0.5"), Port: 443}}, []uint32{0})
		check("names", err)
		gens, err := r.Generations()
		check("generations", err)
		for _, g := range gens {
			_, err = r.GenerationPlan(g.N)
			check("plan", err)
		}
		_, err = r.GetMeta("follow")
		check("meta", err)
	}
	w, err := Create(path, Options{LockTimeout: time.Second})
	check("create", err)
	if err != nil {
		return
	}
	k := FlowKey{UID: 1, Proto: 6, IP: netip.MustParseAddr("192.0.2.77"), Port: 80}
	check("add observations", w.AddObservations([]Observation{{Kind: ObsAudit, FlowKey: k, Hits: 1, FirstSeen: t0, LastSeen: t0}},
		map[int64]DenialCount{t0.Unix() / 60: {Audit: 1}}))
	check("apply", w.Apply(&Batch{Flows: []Flow{flow(1, "192.0.2.78", 443, 1, t0)}}))

}

// TestBadPagePointerIsAnError: a bucket whose root page number points far
// beyond the file made the reading process die of SIGSEGV. Now every
// reader and writer returns an error that names the file and says it is
// corrupt: the file's tree is checked when it is opened (pagecheck.go).
func TestBadPagePointerIsAnError(t *testing.T) {
	for _, bucket := range []string{"flows", "observations"} {
		t.Run(bucket, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "baseline.db")
			fillRealStore(t, path)
			storetest.BreakBucketRoot(t, path, bucket)
			exerciseStore(t, path)
			_, err := Open(path, Options{})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Errorf("open with a bad page pointer: %v, want an error that says the file is corrupt", err)
			}
		})
	}
}

// TestCorruptFileLockIsReleased: after a fault (here a panic inside the
// transaction, as bbolt panics on a page it cannot read), the file lock of
// the abandoned handle is released, so another process (here another
// Store) can still open the file, and a writer is not locked out; the
// faulted Store answers with the same error from then on.
func TestCorruptFileLockIsReleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baseline.db")
	fillRealStore(t, path)
	w, err := Create(path, Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = w.update(func(*bolt.Tx) error { panic("page 7: invalid type") })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("a transaction that panicked: %v", err)
	}
	if err2 := w.Apply(&Batch{Flows: []Flow{flow(1, "192.0.2.1", 443, 1, t0)}}); err2 == nil || !strings.Contains(err2.Error(), err.Error()) {
		t.Errorf("after the fault: %v, want the same error", err2)
	}
	// bbolt's exclusive lock would make this time out if the handle
	// still held it.
	other, err := Create(path, Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("the lock was not released: %v", err)
	}
	if _, err := other.Generations(); err != nil {
		t.Errorf("the file: %v", err)
	}
}
