package coverage

import (
	"bytes"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egresskit/egress/store"
)

// The fixture host (testdata/host) holds copies of real unit files and
// crontabs of Debian 12 packages (apt, util-linux, e2fsprogs, man-db,
// dpkg, systemd, postgresql-common, certbot, cron, anacron), a user's
// crontab, and the stamps their schedulers leave. Its soak, at a moved
// clock: two learning runs with a gap, the second still running.
var (
	fixNow  = mustTime("2026-11-29T12:00:00Z") // a Sunday
	fixBoot = mustTime("2026-11-20T00:00:00Z")
	fixRuns = []store.Run{
		{ID: 1, Start: mustTime("2026-11-26T08:00:00Z"), End: mustTime("2026-11-27T20:00:00Z"), Finished: true},
		{ID: 2, Start: mustTime("2026-11-28T09:00:00Z"), End: mustTime("2026-11-29T12:00:00Z")},
	}
	// Last triggers, as the schedulers would have left them.
	fixStamps = map[string]time.Time{
		"var/lib/systemd/timers/stamp-apt-daily.timer": mustTime("2026-11-29T07:31:12Z"), // in run 2
		"var/lib/systemd/timers/stamp-fstrim.timer":    mustTime("2026-11-23T01:12:40Z"), // a week ago
		"var/spool/anacron/cron.daily":                 mustTime("2026-11-29T07:35:02Z"),
		"var/spool/anacron/cron.weekly":                mustTime("2026-11-24T07:35:04Z"), // before the soak
		"var/spool/anacron/cron.monthly":               mustTime("2026-11-27T07:35:06Z"),
	}
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// fixtureRoot copies testdata/host (links as links) and dates its stamps.
func fixtureRoot(t testing.TB) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "host")
	copyTree(t, "testdata/host", root)
	for p, at := range fixStamps {
		if err := os.Chtimes(filepath.Join(root, p), at, at); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fixFlows: certbot's service reached Let's Encrypt; alice's photo sync
// reached its server; and a unit of alice's own, which she named like
// the system's fstrim.service, connected from her user slice.
func fixFlows() []store.Flow {
	flow := func(uid uint32, ip string, port uint16, names, procs, cgroups []string) store.Flow {
		return store.Flow{FlowKey: store.FlowKey{UID: uid, Proto: 6, IP: netip.MustParseAddr(ip), Port: port}, Hits: 3,
			FirstSeen: mustTime("2026-11-28T12:00:00Z"), LastSeen: mustTime("2026-11-28T12:00:05Z"),
			Hostnames: names, Processes: procs, Cgroups: cgroups}
	}
	return []store.Flow{
		flow(0, "172.65.32.248", 443, []string{"acme-v02.api.letsencrypt.org"}, []string{"certbot"}, []string{"/system.slice/certbot.service"}),
		flow(1000, "203.0.113.7", 443, []string{"photos.example.com"}, []string{"sync-photos"}, []string{"/user.slice/user-1000.slice/session-3.scope"}),
		flow(1000, "198.51.100.9", 443, nil, []string{"curl"}, []string{"/user.slice/user-1000.slice/user@1000.service/app.slice/fstrim.service"}),
	}
}

// fixOptions: the fixture host with systemd and cron running, in UTC.
func fixOptions(root string) Options {
	o := DefaultOptions()
	o.Root, o.Now, o.Location, o.Boot = root, fixNow, time.UTC, fixBoot
	o.Systemd, o.Cron = true, true
	o.Runs, o.Flows = fixRuns, fixFlows()
	return o
}

func jobNamed(t *testing.T, c *Coverage, name string) Job {
	t.Helper()
	for _, j := range c.Jobs {
		if j.Name == name {
			return j
		}
	}
	t.Fatalf("no job %s among %d", name, len(c.Jobs))
	return Job{}
}

func store2Run(id uint64, start, end string) store.Run {
	return store.Run{ID: id, Start: mustTime(start), End: mustTime(end)}
}

// scanText scans with o and writes the text output, as the command does.
func scanText(t testing.TB, o Options) (*Coverage, string) {
	t.Helper()
	c, err := Scan(o)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteText(&out, c); err != nil {
		t.Fatal(err)
	}
	return c, out.String()
}
