package learn

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/dnsanswer"
	"github.com/egresskit/egress/store"
)

var (
	ns1 = netip.MustParseAddrPort("192.0.2.53:53")
	ns2 = netip.MustParseAddrPort("198.51.100.53:53")
)

func q(id uint16, name string) dnsanswer.Question {
	return dnsanswer.Question{ID: id, Name: name, QType: 1, QClass: 1}
}

func ans(id uint16, name string) dnsanswer.Question {
	a := q(id, name)
	a.Response = true
	return a
}

func TestQueryTableMatchesOnce(t *testing.T) {
	tb := newQueryTable(16, 0, time.Minute)
	tb.query(1, 1000, q(7, "a.example"), ns1, 0)
	if tb.answer(2, ans(7, "a.example"), ns1, 1) {
		t.Error("an answer to another socket matched")
	}
	if tb.answer(1, ans(8, "a.example"), ns1, 1) {
		t.Error("an answer with another id matched")
	}
	if tb.answer(1, ans(7, "b.example"), ns1, 1) {
		t.Error("an answer to another question matched")
	}
	if tb.answer(1, ans(7, "a.example"), ns2, 1) {
		t.Error("an answer from another server matched")
	}
	if !tb.answer(1, ans(7, "a.example"), ns1, 1) {
		t.Error("the real answer did not match (a forged one consumed the query)")
	}
	if tb.answer(1, ans(7, "a.example"), ns1, 2) {
		t.Error("a replayed answer matched")
	}
	want := DNSMatchStats{Queries: 1, Matched: 1, NoQuery: 3, Mismatch: 1, OtherServer: 1}
	if tb.stats != want {
		t.Errorf("stats %+v, want %+v", tb.stats, want)
	}
	if tb.len() != 0 {
		t.Errorf("%d queries left", tb.len())
	}
}

func TestQueryTableSeveralServersAndCase(t *testing.T) {
	tb := newQueryTable(16, 0, time.Minute)
	// A stub resolver sends the same query to each nameserver.
	tb.query(1, 0, q(9, "a.example"), ns1, 0)
	tb.query(1, 0, q(9, "a.example"), netip.MustParseAddrPort("[::ffff:198.51.100.53]:53"), 1)
	if !tb.answer(1, ans(9, "a.example"), ns2, 2) {
		t.Error("the answer of the second nameserver did not match")
	}
	if tb.stats.Queries != 1 {
		t.Errorf("queries %d, want 1", tb.stats.Queries)
	}
	// The same id for another question replaces the query.
	tb.query(1, 0, q(9, "b.example"), ns1, 3)
	tb.query(1, 0, q(9, "c.example"), ns1, 4)
	if tb.answer(1, ans(9, "b.example"), ns1, 5) || !tb.answer(1, ans(9, "c.example"), ns1, 5) {
		t.Error("the id's latest question should match, and only it")
	}
}

func TestQueryTableExpires(t *testing.T) {
	tb := newQueryTable(16, 0, time.Second)
	tb.query(1, 0, q(1, "a.example"), ns1, 0)
	if tb.answer(1, ans(1, "a.example"), ns1, 2*time.Second) {
		t.Error("an answer after the ttl matched")
	}
	tb.query(1, 0, q(2, "a.example"), ns1, 0)
	tb.query(1, 0, q(3, "a.example"), ns1, 3*time.Second) // expires the one before
	if tb.len() != 1 {
		t.Errorf("%d queries, want 1 after expiry", tb.len())
	}
}

// TestQueryTableShare: a user over its share pushes out its own oldest
// queries, never another user's; an answer to a pushed-out query is
// counted as evicted.
func TestQueryTableShare(t *testing.T) {
	tb := newQueryTable(64, 8, time.Minute)
	tb.query(1, 1000, q(1, "victim.example"), ns1, 0)
	for i := range 1000 {
		tb.query(2, 666, q(uint16(i), "flood.example"), ns1, time.Duration(i))
	}
	if n := tb.users[666].list.Len(); n != 8 {
		t.Errorf("the flooder holds %d queries, want its share of 8", n)
	}
	if tb.stats.QueriesEvicted != 992 {
		t.Errorf("evicted %d, want 992", tb.stats.QueriesEvicted)
	}
	if !tb.answer(1, ans(1, "victim.example"), ns1, time.Second) {
		t.Error("the victim's query was pushed out by the flood")
	}
	if tb.answer(2, ans(991, "flood.example"), ns1, time.Second) || tb.stats.Evicted != 1 {
		t.Errorf("an answer to an evicted query: stats %+v", tb.stats)
	}
}

// TestQueryTableFullEvictsTheLargest: with many users (one user with a
// range of subordinate UIDs), a full table pushes out the oldest query of
// whoever holds the most, never of a user holding fewer, and of equals
// the one that inserted last.
func TestQueryTableFullEvictsTheLargest(t *testing.T) {
	tb := newQueryTable(32, 8, time.Minute)
	for uid := uint32(1000); uid < 1003; uid++ {
		tb.query(uint64(uid), uid, q(1, "victim.example"), ns1, 0)
	}
	tb.query(1003, 1003, q(1, "busy.example"), ns1, 0)
	tb.query(1003, 1003, q(2, "busy.example"), ns1, 0)
	now := time.Duration(1)
	for uid := uint32(100000); uid < 100100; uid++ {
		for i := range 4 {
			tb.query(uint64(uid), uid, q(uint16(i), "flood.example"), ns1, now)
			now++
			if tb.len() > 32 {
				t.Fatalf("table holds %d queries, more than 32", tb.len())
			}
		}
	}
	for uid := uint64(1000); uid < 1003; uid++ {
		if !tb.answer(uid, ans(1, "victim.example"), ns1, now) {
			t.Errorf("the query of user %d was pushed out", uid)
		}
	}
	// The user with two queries had more than the level of the flood.
	if u := tb.users[1003]; u == nil || u.list.Len() != 1 {
		t.Errorf("the busier user kept %v, want 1 query", u)
	}
}

// TestQueryTableBounded: whatever arrives, the table and its tombstones
// stay within their bounds.
func TestQueryTableBounded(t *testing.T) {
	tb := newQueryTable(50, 5, time.Second)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 100000 {
		now := time.Duration(i) * time.Millisecond
		cookie, uid, id := uint64(r.IntN(200)), uint32(r.IntN(30)), uint16(r.IntN(20))
		if r.IntN(3) == 0 {
			tb.answer(cookie, ans(id, "x.example"), ns1, now)
		} else {
			tb.query(cookie, uid, q(id, "x.example"), ns1, now)
		}
		if tb.len() > 50 || len(tb.gone.at) > 50 {
			t.Fatalf("step %d: %d queries, %d tombstones", i, tb.len(), len(tb.gone.at))
		}
		for uid, u := range tb.users {
			if n := u.list.Len(); n > 5 || n == 0 {
				t.Fatalf("step %d: user %d holds %d", i, uid, n)
			}
		}
		if len(tb.heap) != len(tb.users) || tb.age.Len() != tb.len() {
			t.Fatalf("step %d: heap %d users %d, age %d entries %d", i, len(tb.heap), len(tb.users), tb.age.Len(), tb.len())
		}
	}
	n := 0
	for _, u := range tb.users {
		n += u.list.Len()
	}
	if n != tb.len() {
		t.Errorf("users hold %d queries, the index %d", n, tb.len())
	}
}

func TestIgnoredAnswersAreShown(t *testing.T) {
	if l := (Status{DNSAnswers: 3, DNSIgnored: 2}).Line(); !strings.Contains(l, "dns answers 3, ignored 2") {
		t.Errorf("status line %q", l)
	}
	var b strings.Builder
	runs := []store.Run{{ID: 1, DNS: store.DNSMatch{NoQuery: 2, Mismatch: 1, OtherServer: 1, Evicted: 1}, Finished: true}}
	if err := WriteReportTable(&b, nil, runs, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "5 ignored (2 with no matching query, 1 with another question, 1 from another server, 1 whose query was pushed out, 0 malformed)") {
		t.Errorf("report:\n%s", b.String())
	}
}
