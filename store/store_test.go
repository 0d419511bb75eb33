package store

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Create(filepath.Join(t.TempDir(), "sub", "baseline.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func flow(uid uint32, ip string, port uint16, hits uint64, at time.Time, procs ...string) Flow {
	return Flow{
		FlowKey:   FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: port},
		Hits:      hits,
		FirstSeen: at,
		LastSeen:  at,
		Processes: procs,
	}
}

func TestCreateMakesPrivateFileAndFolder(t *testing.T) {
	s := newStore(t)
	st, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", st.Mode().Perm())
	}
	dir, err := os.Stat(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if dir.Mode().Perm() != 0o700 {
		t.Errorf("folder mode %v, want 0700", dir.Mode().Perm())
	}
	info, err := s.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Schema != SchemaVersion || info.Created.IsZero() {
		t.Errorf("info = %+v", info)
	}
}

func TestRoundTripAndBatching(t *testing.T) {
	s := newStore(t)
	run, err := s.BeginRun(Run{Start: t0, Cgroup: "/sys/fs/cgroup/x"})
	if err != nil {
		t.Fatal(err)
	}
	if run.ID != 1 {
		t.Fatalf("first run ID = %d", run.ID)
	}
	// Two flushes of the same flow add up; the v4 address given mapped comes back plain.
	b1 := &Batch{
		DNS: []DNSObservation{{IP: netip.MustParseAddr("10.0.0.1"), Names: []string{"www.example.com", "web.example.net"}, TTL: 60, UID: 1000, Seen: t0}},
		Flows: []Flow{
			flow(1000, "::ffff:10.0.0.1", 443, 3, t0, "curl"),
			flow(1001, "2001:db8::1", 80, 1, t0, "wget"),
		},
		Run: &Run{ID: run.ID, Start: t0, End: t0.Add(5 * time.Second), Events: 4},
	}
	if err := s.Apply(b1); err != nil {
		t.Fatal(err)
	}
	b2 := &Batch{Flows: []Flow{flow(1000, "10.0.0.1", 443, 2, t0.Add(time.Minute), "curl", "python3")}}
	if err := s.Apply(b2); err != nil {
		t.Fatal(err)
	}
	flows, err := s.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 2 {
		t.Fatalf("got %d flows, want 2: %+v", len(flows), flows)
	}
	f := flows[0]
	if f.UID != 1000 || f.IP != netip.MustParseAddr("10.0.0.1") || f.Port != 443 || f.Proto != 6 {
		t.Errorf("first flow key = %+v", f.FlowKey)
	}
	if f.Hits != 5 {
		t.Errorf("hits = %d, want 5", f.Hits)
	}
	if !f.FirstSeen.Equal(t0) || !f.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Errorf("seen %v .. %v", f.FirstSeen, f.LastSeen)
	}
	if strings.Join(f.Processes, ",") != "curl,python3" {
		t.Errorf("processes = %v", f.Processes)
	}
	if strings.Join(f.Hostnames, ",") != "www.example.com,web.example.net" {
		t.Errorf("hostnames = %v", f.Hostnames)
	}
	keys, err := s.FlowKeys()
	if err != nil || len(keys) != 2 || keys[0] != f.FlowKey || keys[1] != flows[1].FlowKey {
		t.Errorf("flow keys %+v, %v", keys, err)
	}
	if len(flows[1].Hostnames) != 0 {
		t.Errorf("unresolved flow got names %v", flows[1].Hostnames)
	}
	runs, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Events != 4 || runs[0].Cgroup != "" && runs[0].Cgroup != "/sys/fs/cgroup/x" {
		t.Errorf("runs = %+v", runs)
	}
	dns, err := s.DNS()
	if err != nil {
		t.Fatal(err)
	}
	if len(dns) != 1 || len(dns[0].Names) != 2 || dns[0].Names[0].TTL != 60 || dns[0].Names[0].UIDs[0] != 1000 {
		t.Errorf("dns = %+v", dns)
	}
}

func TestNamesPreferTheSameUser(t *testing.T) {
	s := newStore(t)
	ip := netip.MustParseAddr("192.0.2.7")
	err := s.Apply(&Batch{
		DNS: []DNSObservation{
			{IP: ip, Names: []string{"a.example"}, TTL: 30, UID: 1, Seen: t0},
			{IP: ip, Names: []string{"b.example"}, TTL: 30, UID: 2, Seen: t0},
		},
		Flows:     []Flow{flow(2, "192.0.2.7", 443, 1, t0), flow(3, "192.0.2.7", 443, 1, t0)},
		Resolvers: []uint32{1},
	})
	if err != nil {
		t.Fatal(err)
	}
	flows, err := s.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(flows[0].Hostnames, ","); got != "b.example" {
		t.Errorf("uid 2 names = %q, want its own lookup b.example", got)
	}
	if got := strings.Join(flows[1].Hostnames, ","); got != "a.example" {
		t.Errorf("uid 3 (resolved nothing) names = %q, want the resolver's a.example", got)
	}
}

func TestListsAreBoundedAndCounted(t *testing.T) {
	s := newStore(t)
	var procs []string
	for i := range MaxProcesses + 5 {
		procs = append(procs, fmt.Sprintf("p%d", i))
	}
	if err := s.Apply(&Batch{Flows: []Flow{flow(1, "192.0.2.1", 1, 1, t0, procs...)}}); err != nil {
		t.Fatal(err)
	}
	flows, _ := s.Flows()
	if len(flows[0].Processes) != MaxProcesses || flows[0].Dropped != 5 {
		t.Errorf("kept %d processes, dropped %d", len(flows[0].Processes), flows[0].Dropped)
	}
}

func TestMissingFileIsAClearError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.db")
	_, err := Open(path, Options{})
	if !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want ErrNotExist naming %s", err, path)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reading a missing store created %s", path)
	}
}

func TestBadFilesAreRefusedAndLeftAlone(t *testing.T) {
	valid := newStore(t)
	good, err := os.ReadFile(valid.Path())
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(t.TempDir(), "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	foreignBytes, _ := os.ReadFile(foreign)

	cases := map[string][]byte{
		"empty":     {},
		"text":      []byte("this is not a database\n"),
		"garbage":   []byte(strings.Repeat("\xde\xad\xbe\xef", 4096)),
		"truncated": good[:100],
		"foreign":   foreignBytes,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), name+".db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, open := range []func(string, Options) (*Store, error){Create, Open} {
				_, err := open(path, Options{LockTimeout: time.Second})
				if err == nil {
					t.Fatal("opened a bad file")
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error does not name the file: %v", err)
				}
			}
			after, _ := os.ReadFile(path)
			if string(after) != string(content) {
				t.Errorf("the bad file was changed")
			}
		})
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	s := newStore(t)
	setSchema(t, s.Path(), SchemaVersion+1)
	for _, open := range []func(string, Options) (*Store, error){Create, Open} {
		_, err := open(s.Path(), Options{})
		if err == nil || !strings.Contains(err.Error(), "newer than this binary") {
			t.Errorf("err = %v, want a refusal of the newer schema", err)
		}
	}
}

func setSchema(t *testing.T, path string, v int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(v)))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMigrationsRunOnceInOrder(t *testing.T) {
	s := newStore(t)
	if err := s.Apply(&Batch{Flows: []Flow{flow(1, "192.0.2.1", 443, 1, t0)}}); err != nil {
		t.Fatal(err)
	}
	ran := 0
	saved := migrations
	t.Cleanup(func() { migrations = saved })
	migrations = append(slicesClone(saved), migration{latest() + 1, "test: add a bucket", func(tx *bolt.Tx) error {
		ran++
		_, err := tx.CreateBucket([]byte("test-added"))
		return err
	}})
	for range 2 {
		if _, err := Create(s.Path(), Options{}); err != nil {
			t.Fatal(err)
		}
	}
	if ran != 1 {
		t.Errorf("migration ran %d times, want 1", ran)
	}
	db, err := bolt.Open(s.Path(), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if v, _ := schemaOf(tx); v != SchemaVersion+1 {
			t.Errorf("schema after migration = %d", v)
		}
		if tx.Bucket([]byte("test-added")) == nil {
			t.Error("migration's bucket missing")
		}
		if tx.Bucket(bucketFlows).Stats().KeyN != 1 {
			t.Error("migration lost the flows")
		}
		return nil
	})
}

func TestFailingMigrationChangesNothing(t *testing.T) {
	s := newStore(t)
	saved := migrations
	t.Cleanup(func() { migrations = saved })
	migrations = append(slicesClone(saved), migration{latest() + 1, "test: fail", func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("half-done")); err != nil {
			return err
		}
		return errors.New("boom")
	}})
	_, err := Create(s.Path(), Options{})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
	migrations = saved
	info, err := s.Info()
	if err != nil || info.Schema != SchemaVersion {
		t.Errorf("after a failed migration: info %+v, err %v", info, err)
	}
}

func slicesClone(m []migration) []migration { return append([]migration(nil), m...) }

// TestReadersAndWriterShareTheFile: a writer flushing in a loop and two
// readers, each opening the file per operation, all succeed, and each read
// sees every flush that ended before it and none that had not begun. Each
// reader waits for one more flush between its reads, so all reads happen
// while the writer writes, whatever the speed of either.
func TestReadersAndWriterShareTheFile(t *testing.T) {
	const readers, reads = 2, 15
	s := newStore(t)
	var flushed atomic.Int64 // flushes that returned
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	var writerErr error
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Each flush adds one flow.
			b := &Batch{Flows: []Flow{flow(uint32(i), "192.0.2.1", 443, 1, t0)}}
			if err := s.Apply(b); err != nil {
				writerErr = fmt.Errorf("flush %d: %w", i+1, err)
				return
			}
			flushed.Add(1)
		}
	}()
	var wg sync.WaitGroup
	readErrs := make(chan error, readers*reads)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range reads {
				if !waitForFlush(&flushed, writerDone) {
					return
				}
				lo := flushed.Load()
				r, err := Open(s.Path(), Options{})
				if err == nil {
					var snap *Snapshot
					if snap, err = r.Snapshot(); err == nil {
						// One more flush may have committed and not yet returned.
						if n, hi := int64(len(snap.Flows)), flushed.Load()+1; n < lo || n > hi {
							err = fmt.Errorf("read %d flows, want %d to %d", n, lo, hi)
						}
					}
				}
				if err != nil {
					readErrs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-writerDone
	if writerErr != nil {
		t.Fatal(writerErr)
	}
	close(readErrs)
	n := 0
	for err := range readErrs {
		t.Error(err)
		n++
	}
	t.Logf("%d flushes, %d reads, %d failed", flushed.Load(), readers*reads, n)
}

// waitForFlush waits until the writer has returned from one more flush; it
// says false if the writer ended first.
func waitForFlush(flushed *atomic.Int64, writerDone <-chan struct{}) bool {
	n := flushed.Load()
	for flushed.Load() == n {
		select {
		case <-writerDone:
			return false
		case <-time.After(time.Millisecond):
		}
	}
	return true
}

func TestLockTimeoutIsBoundedAndNamed(t *testing.T) {
	s := newStore(t)
	db, err := bolt.Open(s.Path(), 0o600, nil) // holds the exclusive lock
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = Open(s.Path(), Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "200ms") {
		t.Fatalf("err = %v, want ErrBusy naming the 200ms timeout", err)
	}
	// Bounded by the option, not by the 5 s default: the only bound that
	// tells them apart, 25 times the option.
	if el := time.Since(start); el >= 5*time.Second {
		t.Errorf("waited %v, as long as the default", el)
	}
}

// TestKilledWriterLeavesEarlierFlushes: a child process flushes batches in
// a loop until it is killed with SIGKILL; every flush it reported is there
// and the file opens cleanly.
func TestKilledWriterLeavesEarlierFlushes(t *testing.T) {
	if os.Getenv("EGRESS_STORE_WRITER") != "" {
		writerChild(os.Getenv("EGRESS_STORE_WRITER"))
		return
	}
	path := filepath.Join(t.TempDir(), "killed.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWriterLeavesEarlierFlushes$")
	cmd.Env = append(os.Environ(), "EGRESS_STORE_WRITER="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf := make([]byte, 1)
	var line []byte
	flushed := 0
	for flushed < 20 {
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("writer output: %v", err)
		}
		if buf[0] == '\n' {
			if n, err := strconv.Atoi(string(line)); err == nil {
				flushed = n
			}
			line = line[:0]
			continue
		}
		line = append(line, buf[0])
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open after SIGKILL: %v", err)
	}
	flows, err := s.Flows()
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) < flushed {
		t.Errorf("%d flows after SIGKILL, the writer had reported %d flushes", len(flows), flushed)
	}
	// And the file takes writes again.
	if _, err := Create(path, Options{}); err != nil {
		t.Fatalf("reopen for writing: %v", err)
	}
}

func writerChild(path string) {
	s, err := Create(path, Options{})
	if err != nil {
		fmt.Println("create:", err)
		os.Exit(1)
	}
	for i := 1; ; i++ {
		if err := s.Apply(&Batch{Flows: []Flow{flow(1, "192.0.2.1", uint16(i), 1, t0)}}); err != nil {
			fmt.Println("apply:", err)
			os.Exit(1)
		}
		fmt.Println(i)
	}
}

// TestMigrationFromVersion1: a file written by the first schema opens,
// keeps its flows, and gains the enforcer's buckets.
func TestMigrationFromVersion1(t *testing.T) {
	// A reader of the new binary reads the old file before any writer
	// migrated it.
	path, r := oldFile(t, 1, func(s *Store) {
		if err := s.Apply(&Batch{Flows: []Flow{flow(7, "192.0.2.9", 443, 3, t0)}}); err != nil {
			t.Fatal(err)
		}
	})
	if gens, err := r.Generations(); err != nil || len(gens) != 0 {
		t.Errorf("generations of a v1 file: %v, %v", gens, err)
	}
	s := migrated(t, path, SchemaVersion)
	if info, err := s.Info(); err != nil || info.Flows != 1 {
		t.Fatalf("after migration: %+v, %v", info, err)
	}
	g, err := s.AddGeneration(Generation{Table: "egress", Mode: "audit", State: GenApplied}, []byte("plan"))
	if err != nil || g.N != 1 {
		t.Fatalf("add generation: %+v, %v", g, err)
	}
}

func TestGenerationsAndObservations(t *testing.T) {
	s := newStore(t)
	g1, err := s.AddGeneration(Generation{Table: "egress", Mode: "audit", State: GenApplied}, []byte(`{"plan":1}`))
	if err != nil {
		t.Fatal(err)
	}
	g2, err := s.AddGeneration(Generation{Table: "egress", Mode: "enforce", State: GenPending, RollbackTo: g1.N}, []byte(`{"plan":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateGeneration(g2.N, func(g *Generation) error {
		if g.State != GenPending {
			return errors.New("not pending")
		}
		g.State = GenConfirmed
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A second transition sees the first and refuses.
	if _, err := s.UpdateGeneration(g2.N, func(g *Generation) error {
		if g.State != GenPending {
			return errors.New("not pending")
		}
		return nil
	}); err == nil {
		t.Error("a confirmed generation was treated as pending")
	}
	gens, err := s.Generations()
	if err != nil || len(gens) != 2 || gens[1].State != GenConfirmed || gens[1].RollbackTo != 1 {
		t.Errorf("generations %+v, %v", gens, err)
	}
	plan, err := s.GenerationPlan(2)
	if err != nil || string(plan) != `{"plan":2}` {
		t.Errorf("plan %q, %v", plan, err)
	}
	if _, err := s.GenerationPlan(9); !errors.Is(err, ErrNoGeneration) {
		t.Errorf("missing plan: %v", err)
	}
	k := FlowKey{UID: 5, Proto: 6, IP: netip.MustParseAddr("192.0.2.1"), Port: 443}
	for range 2 {
		err := s.AddObservations([]Observation{{Kind: ObsDrop, FlowKey: k, Hits: 2, FirstSeen: t0, LastSeen: t0}},
			map[int64]DenialCount{t0.Unix() / 60: {Drop: 2}})
		if err != nil {
			t.Fatal(err)
		}
	}
	obs, err := s.Observations()
	if err != nil || len(obs) != 1 || obs[0].Hits != 4 || obs[0].Kind != ObsDrop || obs[0].FlowKey != k {
		t.Errorf("observations %+v, %v", obs, err)
	}
	m, err := s.Denials(t0.Unix()/60-1, t0.Unix()/60+1)
	if err != nil || m[t0.Unix()/60].Drop != 4 {
		t.Errorf("denials %+v, %v", m, err)
	}
}
