package baseline

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/egresskit/egress/config"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// lookupName names a user as config.UserNames does (os/user, the UID
// itself when there is no such user), without its cache.
func lookupName(uid uint32) string {
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		return u.Username
	}
	return n
}

// benchFlows makes n flows as applybench's exports hold them
// (benchutil.Flows): 40 users, 1 in 10 addresses IPv6, a hostname of its
// own for most flows (so about as many name rules as flows).
func benchFlows(n int) []store.Flow {
	rng := rand.New(rand.NewPCG(1, 1))
	seen := map[store.FlowKey]bool{}
	out := make([]store.Flow, 0, n)
	for len(out) < n {
		var ip netip.Addr
		if rng.IntN(10) == 0 {
			var a [16]byte
			binary.BigEndian.PutUint64(a[:], 0x2a00000000000000|rng.Uint64()>>8)
			binary.BigEndian.PutUint64(a[8:], rng.Uint64())
			ip = netip.AddrFrom16(a)
		} else {
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], 0x0b000000+rng.Uint32()%0xb0000000)
			if a[0] == 127 {
				continue
			}
			ip = netip.AddrFrom4(a)
		}
		k := store.FlowKey{UID: 1000 + uint32(rng.IntN(40)), Proto: plan.ProtoTCP, IP: ip, Port: []uint16{443, 80, 8443, 5432}[rng.IntN(4)]}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, store.Flow{FlowKey: k, Hits: 1 + uint64(rng.IntN(5000)), FirstSeen: memoNow.Add(-48 * time.Hour), LastSeen: memoNow,
			Hostnames: []string{fmt.Sprintf("svc%d.r%d.cdn.example.net", rng.IntN(100000), rng.IntN(20))}, Processes: []string{"java"}})
	}
	return out
}

// BenchmarkReadMemo100k reads and decodes the memo of a 100,000-flow
// export, its users named through os/user as the CLI names them (the
// memo's read on a delta's critical path: loadMemo), and reports the
// CPU time of a read beside its wall time.
func BenchmarkReadMemo100k(b *testing.B) {
	flows := benchFlows(100_000)
	dir := b.TempDir()
	export, memoPath := filepath.Join(dir, "base.json"), filepath.Join(dir, "memo")
	writeMemoExport(b, export, flows, true)
	o := memoOptions(plan.FollowBoth, "")
	o.UserName = config.UserNames{}.Name // cached: the memo's users are named once
	oo := o
	r, err := ReadExportMemo(export, memoPath, 1, &oo, func(string) {})
	if err != nil {
		b.Fatal(err)
	}
	if err := WriteMemo(memoPath, 1, r.Memo(plan.BuildWith(r.Merged.Flows, r.Plain, oo))); err != nil {
		b.Fatal(err)
	}
	fp, err := optionsPrint(&o)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		m, _, why := readMemo(memoPath, fp, lookupName)
		if m == nil {
			b.Fatal(why)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/op")
}
