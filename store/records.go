package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bounds on the lists a record keeps, so a busy flow cannot grow a record
// without end. What does not fit is counted, not silently dropped.
const (
	MaxProcesses   = 32
	MaxCgroups     = 16
	MaxHostnames   = 32
	MaxNamesPerIP  = 32
	MaxUIDsPerName = 64
	MaxPresented   = 16
)

// ProtoName names an IP protocol number as nft does: "tcp", "udp", "icmp",
// "icmpv6", or the number.
func ProtoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

// FlowKey identifies a flow: who (UID) reaches what (protocol, address, port).
type FlowKey struct {
	UID   uint32     `json:"uid"`
	Proto uint8      `json:"proto"`
	IP    netip.Addr `json:"ip"`
	Port  uint16     `json:"port"`
}

// Compare orders flow keys as every list of flows shows them: by UID, then
// address, protocol and port.
func (k FlowKey) Compare(o FlowKey) int {
	return cmp.Or(cmp.Compare(k.UID, o.UID), k.IP.Compare(o.IP), cmp.Compare(k.Proto, o.Proto), cmp.Compare(k.Port, o.Port))
}

// NoUID is the UID of packets no local socket owns (the monitor's
// observations of them).
const NoUID = 1<<32 - 1

// WidenSeen widens the seen interval [*first, *last] to take in
// [from, to].
func WidenSeen(first, last *time.Time, from, to time.Time) {
	if from.Before(*first) {
		*first = from
	}
	if to.After(*last) {
		*last = to
	}
}

const flowKeyLen = 4 + 1 + 16 + 2

func (k FlowKey) bytes() []byte { return k.put(make([]byte, flowKeyLen)) }

// put writes the stored form of k into b (flowKeyLen bytes) and returns b.
func (k FlowKey) put(b []byte) []byte {
	binary.BigEndian.PutUint32(b[0:4], k.UID)
	b[4] = k.Proto
	a16 := k.IP.As16()
	copy(b[5:21], a16[:])
	binary.BigEndian.PutUint16(b[21:23], k.Port)
	return b
}

func parseFlowKey(b []byte) (FlowKey, error) {
	if len(b) != flowKeyLen {
		return FlowKey{}, badData("flow key of %d bytes, want %d", len(b), flowKeyLen)
	}
	return FlowKey{
		UID:   binary.BigEndian.Uint32(b[0:4]),
		Proto: b[4],
		IP:    netip.AddrFrom16([16]byte(b[5:21])).Unmap(),
		Port:  binary.BigEndian.Uint16(b[21:23]),
	}, nil
}

func ipKey(ip netip.Addr) []byte {
	a := ip.As16()
	return a[:]
}

// Flow is what the store knows of one flow. As an argument to Apply it is
// a delta: Hits are added, times widen the seen interval, lists are merged.
type Flow struct {
	FlowKey
	Hits      uint64    `json:"hits"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Hostnames []string  `json:"hostnames,omitempty"`
	// Processes are the executables that made the connections: the name
	// of the file each process ran (as /proc/PID/exe shows it); the
	// process's own name (comm) where the kernel could not read it, and
	// in records written before the learner read it (issue 11).
	Processes []string `json:"processes,omitempty"`
	// Comms are the process names (comm) that differ from their
	// executable's name: a process that named itself, a script.
	Comms   []ProcessComm `json:"comms,omitempty"`
	Cgroups []string      `json:"cgroups,omitempty"`
	// Presented are the names the flow's connections presented on their
	// first data (TLS SNI, HTTP Host), as the learner's name check saw
	// them; a name the DNS names lack is a fronted name (see Fronted).
	Presented []string `json:"presented,omitempty"`
	// Dropped counts list entries that did not fit the bounds above.
	Dropped uint64 `json:"dropped,omitempty"`
	Approval
}

// Approval says whether a flow is in the reviewed baseline: approved by
// an apply (or a reconcile) of the enforcer, or a candidate the learner
// saw since. Learning never changes it.
type Approval struct {
	// Approved is the generation that approved the flow; 0 for a candidate.
	Approved   uint64    `json:"approved,omitempty"`
	ApprovedAt time.Time `json:"approved_at,omitzero"`
	// ApprovedNames are the flow's hostnames when it was approved.
	ApprovedNames []string `json:"approved_names,omitempty"`
	// Retired is when a reconcile removed the flow from the baseline.
	Retired time.Time `json:"retired,omitzero"`
}

// flowRecord is a Flow as stored: the key holds its FlowKey, so the value
// leaves the key's fields out (the empty fields below hide them from
// encoding/json: a shallower field of the same name wins, and an empty one
// is omitted).
type flowRecord struct {
	Flow
	UID   struct{} `json:"uid,omitzero"`
	Proto struct{} `json:"proto,omitzero"`
	IP    struct{} `json:"ip,omitzero"`
	Port  struct{} `json:"port,omitzero"`
}

func (r *flowRecord) flow(k FlowKey) Flow {
	f := r.Flow
	f.FlowKey = k
	return f
}

// DNSObservation is one address learned from one DNS answer.
type DNSObservation struct {
	IP    netip.Addr
	Names []string // the names that lead to IP: asked-for name first, then the CNAME chain
	TTL   uint32
	UID   uint32 // owner of the socket that received the answer
	Seen  time.Time
}

// DNSName is one name an address was resolved from.
type DNSName struct {
	Name      string    `json:"name"`
	TTL       uint32    `json:"ttl"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	UIDs      []uint32  `json:"uids,omitempty"`
}

// DNSEntry is every name an address was resolved from.
type DNSEntry struct {
	IP    netip.Addr `json:"ip"`
	Names []DNSName  `json:"names"`
}

type dnsRecord struct {
	Names []DNSName `json:"names"`
}

// Run is one learning session.
type Run struct {
	ID         uint64    `json:"id"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"` // last flush while running
	Cgroup     string    `json:"cgroup"`
	Events     uint64    `json:"events"`
	LostEvents uint64    `json:"lost_events"`
	DNSAnswers uint64    `json:"dns_answers"`
	DNSLost    uint64    `json:"dns_lost"` // answers and queries the kernel could not deliver
	DNS        DNSMatch  `json:"dns"`      // queries seen, answers used and ignored
	// DNSUnrecorded are the DNS observations (address, user, name) the
	// learner had no room for between two flushes.
	DNSUnrecorded uint64 `json:"dns_unrecorded,omitempty"`
	// FlowsUnrecorded are the attempts of new flows over the learner's
	// bounds of the flows it holds.
	FlowsUnrecorded uint64 `json:"flows_unrecorded,omitempty"`
	Finished        bool   `json:"finished"`
}

// Batch is what a learner gathered since its last flush; Apply commits it
// in one transaction.
type Batch struct {
	Flows []Flow
	DNS   []DNSObservation
	// Questions are the answered questions, by user (schema 5).
	Questions []QuestionObservation
	// QuestionsUnrecorded are questions the learner had no room for.
	QuestionsUnrecorded uint64
	// DNSUnrecorded is set by Apply: the observations of addresses new
	// to the DNS table that found it full (MaxDNSAddresses), not kept.
	DNSUnrecorded uint64
	Run           *Run // updated when set; its ID must come from BeginRun
	// Resolvers are the UIDs whose DNS answers may name other users'
	// flows (local resolvers asking on their behalf); see NamesFor.
	Resolvers []uint32
}

// Empty reports whether the batch has nothing to write.
func (b *Batch) Empty() bool {
	return len(b.Flows) == 0 && len(b.DNS) == 0 && len(b.Questions) == 0 && b.Run == nil
}

// BeginRun records the start of a learning run and returns it with its ID.
func (s *Store) BeginRun(r Run) (Run, error) {
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		r.ID = id
		return putJSON(b, runKey(id), &r)
	})
	if err != nil {
		return Run{}, fmt.Errorf("begin run: %w", err)
	}
	return r, nil
}

func runKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// Apply commits a batch: DNS observations first, so that flows of the same
// batch get the names their addresses were resolved from.
func (s *Store) Apply(b *Batch) error {
	err := s.update(func(tx *bolt.Tx) error {
		dns := tx.Bucket(bucketDNS)
		b.DNSUnrecorded = 0
		if len(b.DNS) > 0 {
			n, err := dnsCount(tx, dns)
			if err != nil {
				return err
			}
			added := uint64(0)
			for _, o := range b.DNS {
				isNew, kept, err := applyDNS(dns, o, n+added >= uint64(maxDNSAddresses))
				switch {
				case err != nil:
					return err
				case !kept:
					b.DNSUnrecorded++
				case isNew:
					added++
				}
			}
			if added > 0 {
				if err := countUnrecorded(tx, keyDNSCount, added); err != nil {
					return err
				}
			}
		}
		if b.DNSUnrecorded > 0 {
			if err := countUnrecorded(tx, keyDNSUnrecorded, b.DNSUnrecorded); err != nil {
				return err
			}
		}
		for _, q := range b.Questions {
			if err := applyQuestion(tx, q); err != nil {
				return err
			}
		}
		if b.QuestionsUnrecorded > 0 {
			if err := countUnrecorded(tx, keyQuestionsUnrecorded, b.QuestionsUnrecorded); err != nil {
				return err
			}
		}
		flows := tx.Bucket(bucketFlows)
		for _, f := range b.Flows {
			if err := applyFlow(flows, dns, f, b.Resolvers); err != nil {
				return err
			}
		}
		if b.Run != nil {
			if b.Run.ID == 0 {
				return fmt.Errorf("run without an ID")
			}
			if err := putJSON(tx.Bucket(bucketRuns), runKey(b.Run.ID), b.Run); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply batch: %w", err)
	}
	return nil
}

// MaxDNSAddresses bounds the addresses of the DNS table: a user whose
// answers give new addresses (a wildcard name of its own, 250 addresses
// an answer) would grow it without end, and nothing prunes it. An
// observation of a new address past it is counted (meta/dns_unrecorded),
// not kept; the addresses already there keep their names fresh.
const MaxDNSAddresses = 1 << 21

var (
	maxDNSAddresses  = MaxDNSAddresses // a variable: tests lower it
	keyDNSCount      = []byte("dns_count")
	keyDNSUnrecorded = []byte("dns_unrecorded")
)

// dnsCount is the number of addresses of the DNS table (read once a
// batch), counted once in a store that does not keep the count yet; tx is
// writable.
func dnsCount(tx *bolt.Tx, b *bolt.Bucket) (uint64, error) {
	if v := tx.Bucket(bucketMeta).Get(keyDNSCount); len(v) == 8 {
		return binary.BigEndian.Uint64(v), nil
	}
	n := uint64(countKeys(b))
	return n, tx.Bucket(bucketMeta).Put(keyDNSCount, binary.BigEndian.AppendUint64(nil, n))
}

// applyDNS records observation o in the DNS table b, and reports whether
// its address is new there and whether it was kept: a new one is not
// when the table is full (MaxDNSAddresses reached).
func applyDNS(b *bolt.Bucket, o DNSObservation, full bool) (isNew, kept bool, err error) {
	key := ipKey(o.IP)
	var rec dnsRecord
	found, err := getJSON(b, key, &rec)
	if err != nil {
		return false, false, err
	}
	if !found && full {
		return true, false, nil
	}
	for _, name := range o.Names {
		i := slices.IndexFunc(rec.Names, func(n DNSName) bool { return n.Name == name })
		if i < 0 {
			rec.Names = append(rec.Names, DNSName{Name: name, FirstSeen: o.Seen})
			i = len(rec.Names) - 1
		}
		n := &rec.Names[i]
		n.TTL = o.TTL
		if o.Seen.After(n.LastSeen) {
			n.LastSeen = o.Seen
		}
		if !slices.Contains(n.UIDs, o.UID) {
			n.UIDs = append(n.UIDs, o.UID)
			if len(n.UIDs) > MaxUIDsPerName {
				n.UIDs = n.UIDs[len(n.UIDs)-MaxUIDsPerName:]
			}
		}
	}
	if len(rec.Names) > MaxNamesPerIP {
		// Keep the names seen most recently.
		sort.SliceStable(rec.Names, func(i, j int) bool { return rec.Names[i].LastSeen.After(rec.Names[j].LastSeen) })
		rec.Names = rec.Names[:MaxNamesPerIP]
	}
	return !found, true, putJSON(b, key, &rec)
}

// namesFor returns the names the DNS table gives ip for a flow of uid
// (see NamesFor).
func namesFor(b *bolt.Bucket, ip netip.Addr, uid uint32, resolvers []uint32) ([]string, error) {
	var rec dnsRecord
	if ok, err := getJSON(b, ipKey(ip), &rec); !ok || err != nil {
		return nil, err
	}
	return NamesFor(rec.Names, uid, resolvers), nil
}

// NamesFor picks, from the names an address was resolved from, those a
// flow of uid to that address carries: the names uid resolved itself, or,
// when it resolved none, the names from answers that one of the resolvers
// received (a local caching resolver that asked on uid's behalf, over a
// channel the learner does not see: nss-resolve's varlink, nscd). Another
// user's answers never name the flow: that user could have resolved a
// name it controls pointing at uid's destination.
func NamesFor(names []DNSName, uid uint32, resolvers []uint32) []string {
	var own, resolved []string
	for _, n := range names {
		if slices.Contains(n.UIDs, uid) {
			own = append(own, n.Name)
		} else if slices.ContainsFunc(n.UIDs, func(u uint32) bool { return slices.Contains(resolvers, u) }) {
			resolved = append(resolved, n.Name)
		}
	}
	if len(own) > 0 {
		return own
	}
	return resolved
}

// FlowNames returns, for each key the DNS table has names for, the names
// a flow of that key carries (see NamesFor), as the learner would give
// them: for flows the learner did not record, such as the monitor's.
func (s *Store) FlowNames(keys []FlowKey, resolvers []uint32) (map[FlowKey][]string, error) {
	return read(s, func(tx *bolt.Tx) (map[FlowKey][]string, error) {
		out := map[FlowKey][]string{}
		b := tx.Bucket(bucketDNS)
		if b == nil {
			return out, nil
		}
		for _, k := range keys {
			names, err := namesFor(b, k.IP, k.UID, resolvers)
			if err != nil {
				return nil, err
			}
			if len(names) > 0 {
				out[k] = names
			}
		}
		return out, nil
	})
}

// mergeList adds the new entries of add to list, up to max; it returns the
// merged list and how many entries did not fit. Empty entries are left
// out.
func mergeList[T comparable](list, add []T, max int) ([]T, uint64) {
	var dropped uint64
	var empty T
	for _, a := range add {
		if a == empty || slices.Contains(list, a) {
			continue
		}
		if len(list) >= max {
			dropped++
			continue
		}
		list = append(list, a)
	}
	return list, dropped
}

func applyFlow(flows, dns *bolt.Bucket, f Flow, resolvers []uint32) error {
	key := f.FlowKey.bytes()
	var rec flowRecord
	found, err := getJSON(flows, key, &rec)
	if err != nil {
		return err
	}
	if !found || (!f.FirstSeen.IsZero() && f.FirstSeen.Before(rec.FirstSeen)) {
		rec.FirstSeen = f.FirstSeen
	}
	if f.LastSeen.After(rec.LastSeen) {
		rec.LastSeen = f.LastSeen
	}
	rec.Hits += f.Hits
	rec.Dropped += f.Dropped
	names, err := namesFor(dns, f.IP, f.UID, resolvers)
	if err != nil {
		return err
	}
	var d1, d2, d3, d4, d5 uint64
	rec.Hostnames, d1 = mergeList(rec.Hostnames, append(slices.Clone(f.Hostnames), names...), MaxHostnames)
	rec.Processes, d2 = mergeList(rec.Processes, f.Processes, MaxProcesses)
	rec.Cgroups, d3 = mergeList(rec.Cgroups, f.Cgroups, MaxCgroups)
	rec.Comms, d4 = mergeList(rec.Comms, f.Comms, MaxProcesses)
	rec.Presented, d5 = mergeList(rec.Presented, f.Presented, MaxPresented)
	rec.Dropped += d1 + d2 + d3 + d4 + d5
	return putFlowRecord(flows, key, &rec)
}

// Snapshot is a consistent copy of the whole store.
type Snapshot struct {
	Info  Info
	Flows []Flow
	DNS   []DNSEntry
	Runs  []Run
}

// Snapshot copies the store in one read transaction.
func (s *Store) Snapshot() (*Snapshot, error) {
	snap := &Snapshot{Info: Info{Path: s.path}}
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		if snap.Info.Schema, err = schemaOf(tx); err != nil {
			return err
		}
		if c := tx.Bucket(bucketMeta).Get(keyCreated); c != nil {
			snap.Info.Created, _ = time.Parse(time.RFC3339, string(c))
		}
		if snap.Flows, err = readFlows(tx); err != nil {
			return err
		}
		if snap.DNS, err = readDNS(tx); err != nil {
			return err
		}
		if snap.Runs, err = readRuns(tx); err != nil {
			return err
		}
		snap.Info.Flows, snap.Info.DNS, snap.Info.Runs = len(snap.Flows), len(snap.DNS), len(snap.Runs)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// Flows returns every flow, ordered by UID, protocol, address and port.
func (s *Store) Flows() ([]Flow, error) { return read(s, readFlows) }

// FlowKeys returns the key of every flow, without decoding the records.
func (s *Store) FlowKeys() ([]FlowKey, error) {
	return read(s, func(tx *bolt.Tx) ([]FlowKey, error) {
		b := tx.Bucket(bucketFlows)
		if b == nil {
			return nil, nil
		}
		out := make([]FlowKey, 0, b.Stats().KeyN)
		err := b.ForEach(func(k, _ []byte) error {
			key, err := parseFlowKey(k)
			out = append(out, key)
			return err
		})
		return out, err
	})
}

// DNS returns every address with the names it was resolved from.
func (s *Store) DNS() ([]DNSEntry, error) { return read(s, readDNS) }

// Runs returns the learning runs, oldest first.
func (s *Store) Runs() ([]Run, error) { return read(s, readRuns) }

// read runs one reader in a read transaction.
func read[T any](s *Store, fn func(*bolt.Tx) (T, error)) (out T, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		out, err = fn(tx)
		return err
	})
	return out, err
}

// each decodes every record of a bucket in key order and passes it to fn
// with its key; a bucket the file does not have yet has none.
func each[R any](tx *bolt.Tx, bucket []byte, fn func(k []byte, rec *R) error) error {
	b := tx.Bucket(bucket)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var rec R
		if err := decodeJSON(k, v, &rec); err != nil {
			return err
		}
		return fn(k, &rec)
	})
}

// readFlows decodes the flows on every CPU: the keys and values stay in
// the file's mapping while the transaction is open (a million flows: 1.3 s
// of CPU).
func readFlows(tx *bolt.Tx) ([]Flow, error) {
	b := tx.Bucket(bucketFlows)
	if b == nil {
		return nil, nil
	}
	kvs := make([][2][]byte, 0, b.Stats().KeyN)
	if err := b.ForEach(func(k, v []byte) error {
		kvs = append(kvs, [2][]byte{k, v})
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]Flow, len(kvs))
	workers := min(runtime.GOMAXPROCS(0), 1+len(kvs)/4096)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// The keys and values are in the file's mapping: a fault here
			// is a damaged file, as in view (fault.go), not a crash.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if r := recover(); r != nil {
					errs[w] = badData("read flows: %v", r)
				}
			}()
			intern := map[string]string{}
			for i := w * len(kvs) / workers; i < (w+1)*len(kvs)/workers; i++ {
				k, v := kvs[i][0], kvs[i][1]
				var err error
				if v != nil {
					err = decodeFlowInto(k, v, &out[i], intern)
				}
				if err == nil {
					out[i].FlowKey, err = parseFlowKey(k)
				}
				if err != nil {
					errs[w] = err // the first in key order: the first of the first worker that has one
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func readDNS(tx *bolt.Tx) ([]DNSEntry, error) {
	var out []DNSEntry
	err := each(tx, bucketDNS, func(k []byte, rec *dnsRecord) error {
		if len(k) != 16 {
			return badData("dns key of %d bytes, want 16", len(k))
		}
		out = append(out, DNSEntry{IP: netip.AddrFrom16([16]byte(k)).Unmap(), Names: rec.Names})
		return nil
	})
	return out, err
}

func readRuns(tx *bolt.Tx) ([]Run, error) {
	var out []Run
	err := each(tx, bucketRuns, func(_ []byte, r *Run) error {
		out = append(out, *r)
		return nil
	})
	return out, err
}

// FlowsFor returns the stored flows of the given keys (those it has).
// walker reads keys in increasing order with one cursor: a step forward
// when the next key is near, a seek when it is not (reading a plan's
// hundred thousand flows in order is many times quicker than as many
// lookups).
type walker struct {
	c       *bolt.Cursor
	k, v    []byte
	started bool
}

// get returns the value of key kb, not before the last key read.
func (w *walker) get(kb []byte) []byte {
	if !w.started {
		w.k, w.v = w.c.Seek(kb)
		w.started = true
	}
	for steps := 0; w.k != nil && bytes.Compare(w.k, kb) < 0; steps++ {
		if steps == 8 {
			w.k, w.v = w.c.Seek(kb)
			break
		}
		w.k, w.v = w.c.Next()
	}
	if w.k != nil && bytes.Equal(w.k, kb) {
		return w.v
	}
	return nil
}

// moved makes the next get seek.
func (w *walker) moved() { w.started = false }

// approver applies approvals to records, one after the other: the flow
// it decodes and hands to fn is its own (not one on the heap per record),
// and the records it writes are cut from slabs (bbolt keeps the values
// it is given until the commit: a million new flows were a million
// allocations).
type approver struct {
	rec  flowRecord
	f    Flow
	slab []byte
	at   approvedAtText
	// unapproved counts the approved flows fn un-approved: the write
	// then counts itself (bumpApprovalsEpoch).
	unapproved int
}

// set applies fn to the flow of key kb, whose stored value is v (nil:
// none), and writes it when fn changed its approval, or when the store
// did not have it.
func (a *approver) set(b *bolt.Bucket, kb, v []byte, fn func(f *Flow)) error {
	k, err := parseFlowKey(kb)
	if err != nil {
		return err
	}
	rec := &a.rec
	*rec = flowRecord{}
	if err := decodeJSON(kb, v, rec); err != nil {
		return err
	}
	found := v != nil
	a.f = rec.flow(k)
	f := &a.f
	fn(f)
	if found && rec.Approval.Approved != 0 && f.Approval.Approved == 0 {
		a.unapproved++
	}
	switch {
	case found && sameApproval(rec.Approval, f.Approval):
		return nil
	case found:
		rec.Approval = f.Approval
	default:
		rec.Flow, rec.Dropped = *f, 0
	}
	if cap(a.slab)-len(a.slab) < 4096 {
		a.slab = make([]byte, 0, 1<<20)
	}
	free := a.slab[len(a.slab):]
	data, err := appendFlowRecordAt(free, rec, &a.at)
	if err != nil {
		return err
	}
	if len(data) > 0 && &free[:1][0] == &data[0] {
		a.slab = a.slab[:len(a.slab)+len(data)] // written in the slab
	}
	return b.Put(kb, data[:len(data):len(data)])
}

// approvedRecord reports whether a stored flow record is approved: it has
// an "approved" member (omitted when 0: a JSON key, since no string of a
// record holds an unescaped quote) whose value is not 0. The key is
// looked for from the end, where a record has it (a 100k-flow delta
// apply looked through every record from its start: 20 ms).
func approvedRecord(v []byte) bool {
	const key = `"approved":`
	// The key's last colon is one of the record's last colons (bytes.LastIndex
	// hashed its way back: 7 ms a 100k-flow delta apply).
	for end := len(v); ; {
		j := bytes.LastIndexByte(v[:end], ':')
		if j < len(key)-1 {
			return false
		}
		if string(v[j+1-len(key):j+1]) == key {
			rest := v[j+1:]
			return len(rest) > 0 && rest[0] >= '1' && rest[0] <= '9'
		}
		end = j
	}
}

func sameApproval(a, b Approval) bool {
	return a.Approved == b.Approved && a.ApprovedAt.Equal(b.ApprovedAt) && a.Retired.Equal(b.Retired) &&
		slices.Equal(a.ApprovedNames, b.ApprovedNames)
}

func (s *Store) FlowsFor(keys []FlowKey) (map[FlowKey]Flow, error) {
	return read(s, func(tx *bolt.Tx) (map[FlowKey]Flow, error) {
		out := map[FlowKey]Flow{}
		b := tx.Bucket(bucketFlows)
		if b == nil {
			return out, nil
		}
		for _, k := range keys {
			var rec flowRecord
			ok, err := getJSON(b, k.bytes(), &rec)
			if err != nil {
				return nil, err
			}
			if ok {
				out[k] = rec.flow(k)
			}
		}
		return out, nil
	})
}

// SetApproval changes the approval of the flows with the given keys in one
// transaction: fn sees each flow and changes its approval. A key the store
// does not have is added with what fn fills in (a destination the monitor
// saw denied, or a fleet baseline's flow this host never saw). Records fn
// leaves as they were are not written again; the keys go in the store's
// order, the fastest for bbolt.
func (s *Store) SetApproval(keys []FlowKey, fn func(f *Flow)) error {
	return s.setApprovals(keys, false, fn)
}

// ApproveNew is SetApproval for the flows not approved yet: fn does not
// see a flow the store holds as approved (told from its stored bytes,
// without decoding it: an apply of a large plan approves few new flows).
func (s *Store) ApproveNew(keys []FlowKey, fn func(f *Flow)) error {
	return s.setApprovals(keys, true, fn)
}

// sortedKeys are the stored forms of keys, in the store's order. The keys
// of a plan's sets come as two runs (IPv4, IPv6) that are often each in
// that order already: then the runs are merged, not sorted.
func sortedKeys(keys []FlowKey) [][]byte {
	all := make([]byte, len(keys)*flowKeyLen) // one allocation for all
	raw := make([][]byte, len(keys))
	for i, k := range keys {
		raw[i] = k.put(all[i*flowKeyLen : (i+1)*flowKeyLen : (i+1)*flowKeyLen])
	}
	if len(raw) < 2 {
		return raw
	}
	cut := 1
	for cut < len(raw) && bytes.Compare(raw[cut-1], raw[cut]) <= 0 {
		cut++
	}
	a, b := raw[:cut], raw[cut:]
	if !slices.IsSortedFunc(b, bytes.Compare) {
		slices.SortFunc(raw, bytes.Compare)
		return raw
	}
	out := make([][]byte, 0, len(raw))
	for len(a) > 0 && len(b) > 0 {
		if bytes.Compare(a[0], b[0]) <= 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

func (s *Store) setApprovals(keys []FlowKey, onlyNew bool, fn func(f *Flow)) error {
	return s.WriteApprovals(&Approvals{raw: sortedKeys(keys), onlyNew: onlyNew, fn: fn})
}

// Fronted are the names the flow's connections presented that none of
// its DNS names is: a name reached through another name's address (domain
// fronting, or a resolver the learner did not see). Empty when the flow
// has no DNS names to compare with.
func (f *Flow) Fronted() []string {
	if len(f.Hostnames) == 0 {
		return nil
	}
	var out []string
	for _, p := range f.Presented {
		// A client that connects by address sends it as the HTTP Host:
		// no name, so nothing fronted.
		if _, err := netip.ParseAddr(strings.Trim(p, "[]")); err == nil {
			continue
		}
		if !slices.ContainsFunc(f.Hostnames, func(h string) bool { return strings.EqualFold(strings.TrimSuffix(h, "."), p) }) {
			out = append(out, p)
		}
	}
	return out
}
