package dnspolicy

import (
	"fmt"
	"testing"
	"time"
)

func TestNormalizeAndMatch(t *testing.T) {
	for in, want := range map[string]string{"WWW.Example.COM.": "www.example.com", "*.CDN.net": "*.cdn.net", "_dmarc.x.org": "_dmarc.x.org"} {
		if got, err := Normalize(in); err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", ".", "a..b", "*", "a.*.b", "*x.com", "*.a.b.c.d.e.f.g.h.i", "a b.com", string(make([]byte, 64)) + ".com"} {
		if _, err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%q) took it", bad)
		}
	}
	es, _ := Dedup([]Entry{{UID: 1, Name: "www.a.com"}, {UID: AllUsers, Name: "*.cdn.net"}, {UID: 1, Name: "WWW.A.COM."}})
	if len(es) != 2 {
		t.Fatalf("dedup: %+v", es)
	}
	for _, c := range []struct {
		uid  uint32
		name string
		want bool
	}{{1, "www.a.com", true}, {2, "www.a.com", false}, {2, "x.y.cdn.net", true}, {2, "cdn.net", false}, {1, "WWW.A.COM.", true}} {
		if got := Matches(es, c.uid, c.name); got != c.want {
			t.Errorf("Matches(%d, %q) = %v", c.uid, c.name, got)
		}
	}
	// The kernel's hash: SipHash-1-3 of the lowered wire form under the
	// key (the kernel tests show the two agree).
	k := Key{1, 2}
	if Hash(k, "WWW.A.COM.") != Hash(k, "www.a.com") || Hash(k, "a") != sipHash(k, []byte{1, 'a', 0}, 1, 3) ||
		Hash(k, "a") == Hash(Key{1, 3}, "a") || Hash(k, "ab.c") == Hash(k, "a.bc") {
		t.Error("hash")
	}
}

func TestSummaryCallsOutATunnel(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var ds []Denial
	for i := range 60 {
		ds = append(ds, Denial{UID: 1000, Name: fmt.Sprintf("k%02dmzxw6ytb.t.exfil.evil", i), Dropped: true, Time: t0})
	}
	for range 5 {
		ds = append(ds, Denial{UID: 1001, Name: "api.example.com", Dropped: true, Time: t0})
	}
	ds = append(ds, Denial{UID: 1001, Name: "www.example.com", Time: t0}, Denial{UID: 1001, Malformed: true, Dropped: true, Time: t0})
	s := Summarize(Tally(ds), SummaryOptions{})
	if len(s.Users) != 2 || s.Users[0].UID != 1000 {
		t.Fatalf("%+v", s)
	}
	a := s.Users[0]
	if a.Names != 60 || a.Parents[0].Domain != "t.exfil.evil" || !a.Parents[0].Tunnel || len(a.Top) != 10 {
		t.Errorf("tunnel user: %+v", a)
	}
	b := s.Users[1]
	if b.Queries != 7 || b.Malformed != 1 || b.Parents[0].Domain != "example.com" || b.Parents[0].Tunnel || b.Top[0].Name != "api.example.com" {
		t.Errorf("other user: %+v", b)
	}
	if ParentOf("example.com") != "example.com" || ParentOf("a.b.example.com") != "b.example.com" {
		t.Error("ParentOf")
	}
}

func TestBurstDetector(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	b := NewBurstDetector(time.Minute, 50)
	called := 0
	for i := range 200 {
		if _, hit := b.Add(1000, fmt.Sprintf("x%d.t.evil", i), t0.Add(time.Duration(i)*time.Millisecond)); hit {
			called++
		}
	}
	if called != 1 {
		t.Errorf("called out %d times, want once", called)
	}
	// The same name again and again is no tunnel; nor 49 names a minute.
	b = NewBurstDetector(time.Minute, 50)
	for i := range 1000 {
		if _, hit := b.Add(1000, "www.t.evil", t0); hit {
			t.Fatal("one name called a tunnel")
		}
		if _, hit := b.Add(1001, fmt.Sprintf("x%d.slow.evil", i%49), t0.Add(time.Duration(i)*2*time.Second)); hit {
			t.Fatalf("49 names a window called a tunnel at %d", i)
		}
	}
}
