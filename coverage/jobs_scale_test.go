package coverage

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egresskit/egress/internal/scaletest"
	"github.com/egresskit/egress/store"
)

// TestCrontabJobsAgainstFlows: a user writes up to 1000 jobs in her
// crontab and makes as many flows as she likes, of up to 32 processes
// each; every flow tried every job (100k flows of 32 processes against
// 1000 jobs: 20 s, linear in the jobs). Now a flow looks its cgroups and
// processes up: the scan against 1000 jobs costs about what it costs
// against 100 (at most 3x, or 3 s, on the same machine, the best of three
// each), and each job still finds its flows: by the executable's name cut
// as the kernel cuts a process's, or by a process's own name.
func TestCrontabJobsAgainstFlows(t *testing.T) {
	root := fixtureRoot(t)
	const flows = 80_000
	o := fixOptions(root)
	for i := range flows {
		procs := make([]string, 0, 32)
		for k := range 31 {
			procs = append(procs, fmt.Sprintf("p%d", k))
		}
		if i%1000 == 0 {
			procs = append(procs, "job-with-a-long-name") // the kernel names it job-with-a-long
		}
		f := store.Flow{FlowKey: store.FlowKey{UID: 1000, Proto: 6, IP: netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 443}, Hits: 3,
			FirstSeen: mustTime("2026-11-28T12:00:00Z"), LastSeen: mustTime("2026-11-28T12:00:05Z"), Processes: procs,
			Cgroups: []string{"/user.slice/user-1000.slice/session-3.scope"}}
		if i == 1 {
			f.Comms = []store.ProcessComm{{Exe: "p0", Comm: "renamed"}}
		}
		o.Flows = append(o.Flows, f)
	}
	crontab := filepath.Join(root, "var/spool/cron/crontabs/alice")
	scan := func(jobs int, limit time.Duration) (*Coverage, time.Duration) {
		lines := "7 3 * * 1 /bin/job-with-a-long-name\n0 4 * * * /bin/renamed --now\n"
		lines += strings.Repeat("7 3 * * 1 /bin/weekly-thing\n", jobs-2)
		if err := os.WriteFile(crontab, []byte(lines), 0o600); err != nil {
			t.Fatal(err)
		}
		var c *Coverage
		d := scaletest.Best(t, fmt.Sprintf("the scan against %d jobs", jobs), limit, func() func() {
			return func() {
				var err error
				if c, err = Scan(o); err != nil {
					t.Error(err)
				}
			}
		})
		return c, d
	}
	_, small := scan(100, time.Hour)
	c, large := scan(maxJobsPerFile, max(3*small, 3*time.Second))
	t.Logf("%d flows against 100 jobs %v, against %d %v: %.1fx", flows, small, maxJobsPerFile, large, float64(large)/float64(small))
	long := jobNamed(t, c, "/var/spool/cron/crontabs/alice:1")
	if !long.Connected || len(long.Destinations) != min(flows/1000, maxDestinations) || long.Match != "process job-with-a-long of uid 1000" {
		t.Errorf("the job of the long name: connected %v, %d destinations (want %d), match %q", long.Connected, len(long.Destinations), min(flows/1000, maxDestinations), long.Match)
	}
	if j := jobNamed(t, c, "/var/spool/cron/crontabs/alice:2"); !j.Connected || strings.Join(j.Destinations, " ") != "tcp/11.0.0.1:443" {
		t.Errorf("the job of a process's own name: connected %v, destinations %q", j.Connected, j.Destinations)
	}
	if j := jobNamed(t, c, "/var/spool/cron/crontabs/alice:3"); j.Connected {
		t.Errorf("a job no flow ran connected: %+v", j.Destinations)
	}
}
