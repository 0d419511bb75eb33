package learn

import (
	"container/heap"
	"container/list"
	"net/netip"
	"time"

	"github.com/egresskit/egress/internal/dnsanswer"
	"github.com/egresskit/egress/store"
)

// DNSMatchStats count what the reader did with the DNS queries and
// answers of the cgroup (see store.DNSMatch).
type DNSMatchStats = store.DNSMatch

// Defaults of the outstanding-query table.
const (
	defaultDNSQueries   = 8192
	defaultDNSQueryTTL  = 30 * time.Second
	maxServersPerQuery  = 4 // a stub resolver may send one query to each nameserver
	defaultShareDivisor = 8
)

// queryKey identifies a query: the socket that sent it, and its id.
type queryKey struct {
	cookie uint64
	id     uint16
}

// question is what a query asks.
type question struct {
	name          string
	qtype, qclass uint16
}

type pendingQuery struct {
	key      queryKey
	user     *userQueries
	q        question
	servers  [maxServersPerQuery]netip.AddrPort
	nservers int
	at       time.Duration // kernel boot time of the last send
	mine     *list.Element // in user.list
	aged     *list.Element // in queryTable.age
}

func (p *pendingQuery) hasServer(s netip.AddrPort) bool {
	for _, x := range p.servers[:p.nservers] {
		if x == s {
			return true
		}
	}
	return false
}

func (p *pendingQuery) addServer(s netip.AddrPort) {
	if !p.hasServer(s) && p.nservers < len(p.servers) {
		p.servers[p.nservers] = s
		p.nservers++
	}
}

// queryTable holds the outstanding DNS queries of the cgroup's sockets. It
// is bounded: at most max queries, at most share of them from one user. A
// user over its share loses its own oldest query; when the table is full
// (many users, or one with many UIDs), the user holding the most loses its
// oldest, and of several the one that inserted last. So a flood only ever
// pushes out the flooder's own queries, unless another user holds more.
// Queries unanswered after ttl are dropped. Every operation takes
// O(log users). Not safe for concurrent use.
type queryTable struct {
	max, share int
	ttl        time.Duration
	entries    map[queryKey]*pendingQuery
	age        list.List // every query, oldest send first
	users      map[uint32]*userQueries
	heap       userHeap   // the users, the one to evict from first
	seq        uint64     // counts inserts, to tell who inserted last
	gone       tombstones // keys of evicted queries
	stats      DNSMatchStats
}

// newQueryTable makes a table of size queries, share of them a user
// (size/8 when 0); zero values take the defaults.
func newQueryTable(size, share int, ttl time.Duration) *queryTable {
	if size <= 0 {
		size = defaultDNSQueries
	}
	if share <= 0 {
		share = size / defaultShareDivisor
	}
	share = max(1, min(share, size))
	if ttl <= 0 {
		ttl = defaultDNSQueryTTL
	}
	return &queryTable{
		max: size, share: share, ttl: ttl,
		entries: map[queryKey]*pendingQuery{},
		users:   map[uint32]*userQueries{},
		gone:    newTombstones(size),
	}
}

// len is the number of outstanding queries.
func (t *queryTable) len() int { return len(t.entries) }

// query remembers a query sent by socket cookie of uid to server at
// kernel boot time now.
func (t *queryTable) query(cookie uint64, uid uint32, q dnsanswer.Question, server netip.AddrPort, now time.Duration) {
	key := queryKey{cookie, q.ID}
	qq := question{q.Name, q.QType, q.QClass}
	server = unmapped(server)
	t.gone.remove(key)
	t.expire(now)
	if p, ok := t.entries[key]; ok {
		if p.q == qq && p.user.uid == uid {
			p.addServer(server) // the same query to another nameserver, or again
			p.at = now
			p.user.list.MoveToBack(p.mine)
			t.age.MoveToBack(p.aged)
			t.touch(p.user)
			return
		}
		t.remove(p) // the id is used for another question: the old one is over
	}
	t.stats.Queries++
	if u := t.users[uid]; u != nil && u.list.Len() >= t.share {
		t.evict(u.list.Front().Value.(*pendingQuery))
	} else if len(t.entries) >= t.max {
		t.evict(t.heap[0].list.Front().Value.(*pendingQuery))
	}
	u := t.users[uid]
	if u == nil {
		u = &userQueries{uid: uid}
		t.users[uid] = u
		heap.Push(&t.heap, u)
	}
	p := &pendingQuery{key: key, user: u, q: qq, at: now}
	p.addServer(server)
	p.mine = u.list.PushBack(p)
	p.aged = t.age.PushBack(p)
	t.entries[key] = p
	t.touch(u)
}

// answer reports whether an answer from server to socket cookie answers
// an outstanding query, and if so forgets the query: one answer a query.
func (t *queryTable) answer(cookie uint64, q dnsanswer.Question, server netip.AddrPort, now time.Duration) bool {
	key := queryKey{cookie, q.ID}
	p, ok := t.entries[key]
	if ok && now-p.at > t.ttl {
		t.remove(p)
		ok = false
	}
	if !ok {
		if t.gone.remove(key) {
			t.stats.Evicted++
		} else {
			t.stats.NoQuery++
		}
		return false
	}
	switch {
	case !p.hasServer(unmapped(server)):
		t.stats.OtherServer++
		return false
	case p.q != question{q.Name, q.QType, q.QClass}:
		t.stats.Mismatch++
		return false
	}
	t.remove(p)
	t.stats.Matched++
	return true
}

// touch records that u inserted last.
func (t *queryTable) touch(u *userQueries) {
	t.seq++
	u.last = t.seq
	heap.Fix(&t.heap, u.index)
}

func (t *queryTable) remove(p *pendingQuery) {
	u := p.user
	u.list.Remove(p.mine)
	t.age.Remove(p.aged)
	delete(t.entries, p.key)
	if u.list.Len() == 0 {
		heap.Remove(&t.heap, u.index)
		delete(t.users, u.uid)
	} else {
		heap.Fix(&t.heap, u.index)
	}
}

func (t *queryTable) evict(p *pendingQuery) {
	t.gone.add(p.key)
	t.remove(p)
	t.stats.QueriesEvicted++
}

// expire drops the queries sent more than the ttl before now.
func (t *queryTable) expire(now time.Duration) {
	for el := t.age.Front(); el != nil; el = t.age.Front() {
		p := el.Value.(*pendingQuery)
		if now-p.at <= t.ttl {
			return
		}
		t.remove(p)
	}
}

// userQueries are one user's queries, oldest first.
type userQueries struct {
	uid   uint32
	list  list.List
	last  uint64 // queryTable.seq of the user's latest insert
	index int    // in the heap
}

// userHeap orders users by the queries they hold, most first, and of
// equals the one that inserted last first: the one flooding rather than
// one waiting for an answer. So a user never loses a query to a full
// table while it holds fewer than another.
type userHeap []*userQueries

func (h userHeap) Len() int { return len(h) }
func (h userHeap) Less(i, j int) bool {
	a, b := h[i].list.Len(), h[j].list.Len()
	return a > b || (a == b && h[i].last > h[j].last)
}
func (h userHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *userHeap) Push(x any) {
	u := x.(*userQueries)
	u.index = len(*h)
	*h = append(*h, u)
}
func (h *userHeap) Pop() any {
	old := *h
	u := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return u
}

// tombstones remember the last n evicted query keys, so that an answer to
// one is counted as evicted rather than unsolicited.
type tombstones struct {
	ring []queryKey
	next int
	full bool
	at   map[queryKey]int // the ring slot of each key's latest add
}

func newTombstones(n int) tombstones {
	return tombstones{ring: make([]queryKey, n), at: map[queryKey]int{}}
}

func (g *tombstones) add(k queryKey) {
	if old := g.ring[g.next]; g.full && g.at[old] == g.next {
		delete(g.at, old)
	}
	g.ring[g.next] = k
	g.at[k] = g.next
	g.next++
	if g.next == len(g.ring) {
		g.next, g.full = 0, true
	}
}

// remove forgets k and reports whether it was there.
func (g *tombstones) remove(k queryKey) bool {
	if _, ok := g.at[k]; !ok {
		return false
	}
	delete(g.at, k)
	return true
}

func unmapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
