package learn

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/scaletest"
)

// longFilter is a filter of n users, n ports and n prefixes (of several
// lengths, of both families, some not masked, one of IPv4-mapped
// addresses), and the addresses to try it with.
func longFilter(n int) (Filter, []netip.Addr) {
	var f Filter
	var addrs []netip.Addr
	for i := range n {
		f.Users = append(f.Users, uint32(100_000+i))
		f.Ports = append(f.Ports, uint16(20_000+i))
		a4 := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		a6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1})
		f.Prefixes = append(f.Prefixes, netip.PrefixFrom(a4, 24+i%9), netip.PrefixFrom(a6, 48+i%81))
		addrs = append(addrs, a4, a4.Next(), netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 255}),
			netip.AddrFrom4([4]byte{11, byte(i >> 8), byte(i), 1}), a6, a6.Next(), netip.AddrFrom16(a4.As16()))
	}
	f.Prefixes = append(f.Prefixes, netip.MustParsePrefix("::ffff:192.0.2.0/120"), netip.Prefix{})
	addrs = append(addrs, netip.MustParseAddr("::ffff:192.0.2.9"), netip.MustParseAddr("192.0.2.9"),
		netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("2001:db8::1%eth0"), netip.Addr{})
	return f, addrs
}

// TestLongFilterSame: a long filter, looked up by sets, ignores what the
// searched filter ignores.
func TestLongFilterSame(t *testing.T) {
	f, addrs := longFilter(300)
	x := f.indexed()
	if x.index == nil {
		t.Fatal("a filter of 300 entries is searched")
	}
	ignored := 0
	for _, uid := range []uint32{1, 100_000, 100_299, 100_300} {
		for _, port := range []uint16{443, 20_000, 20_299, 20_300} {
			for _, a := range addrs {
				if got, want := x.Ignored(uid, a, port), f.Ignored(uid, a, port); got != want {
					t.Fatalf("uid %d %s port %d: ignored %v, searched %v", uid, a, port, got, want)
				} else if want {
					ignored++
				}
			}
		}
	}
	t.Logf("%d of %d attempts ignored", ignored, 16*len(addrs))
}

// TestLongFilterPerAttempt: ignore_users, ignore_ports and ignore_cidrs
// are the configuration's, as long as it likes (a port range written
// out), and every attempt a local user makes was searched for in them
// (10k of each: 12 us an attempt). The attempts of n entries' filter cost
// about ten times those of n/10 (n/10 and n attempts; at most
// scaletest.Linear's limit).
func TestLongFilterPerAttempt(t *testing.T) {
	const n = 30_000
	run := func(n int) {
		f, _ := longFilter(n)
		a := newAggregator(f, nil, nil)
		t0 := time.Unix(1000, 0)
		for i := range n {
			a.add(attempt(uint32(i%7), "192.0.2.1", 443, 1, t0, "curl"))
		}
		if st := a.status(t0); st.Ignored != 0 || st.Flows != 7 {
			t.Errorf("%d ignored, %d flows", st.Ignored, st.Flows)
		}
	}
	scaletest.Linear(t, "attempts against a long filter", n, func(n int) func() { return func() { run(n) } })
}
