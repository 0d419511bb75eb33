package store

import (
	"cmp"
	"slices"
	"time"
)

// Flow states, as reports and reconcile name them.
const (
	StateApproved  = "approved"  // in the reviewed baseline
	StateCandidate = "candidate" // seen since, not reviewed yet
	StateStale     = "stale"     // approved, not seen for the stale period
	StateRetired   = "retired"   // removed by a reconcile, not seen since
)

// State classifies a flow at now; flows not seen for staleAfter are
// stale (staleAfter 0: never).
func (f *Flow) State(now time.Time, staleAfter time.Duration) string {
	switch {
	case f.Approved != 0 && staleAfter > 0 && f.LastSeen.Before(now.Add(-staleAfter)):
		return StateStale
	case f.Approved != 0:
		return StateApproved
	case !f.Retired.IsZero() && !f.LastSeen.After(f.Retired):
		return StateRetired
	}
	return StateCandidate
}

// Convergence says whether a user's soak has stabilised: when its last new
// destination appeared, and how many appeared each day.
type Convergence struct {
	UID     uint32    `json:"uid"`
	User    string    `json:"user,omitempty"`
	Flows   int       `json:"flows"`
	LastNew time.Time `json:"last_new"`
	// NewPerDay counts destinations first seen each day, oldest first;
	// the last entry is the 24 hours up to now.
	NewPerDay []int `json:"new_per_day"`
	// Stable: no new destination for the stable period.
	Stable bool `json:"stable"`
}

// Converge computes each user's convergence over days days at now; a user
// is stable when its last new destination is older than stableAfter.
func Converge(flows []Flow, now time.Time, days int, stableAfter time.Duration) []Convergence {
	return ConvergeFunc(flows, nil, now, days, stableAfter)
}

// ConvergeFunc is Converge of the flows keep keeps (nil: all), without
// copying them.
func ConvergeFunc(flows []Flow, keep func(*Flow) bool, now time.Time, days int, stableAfter time.Duration) []Convergence {
	by := map[uint32]*Convergence{}
	var last *Convergence // flows come grouped by user: one map lookup a user
	for i := range flows {
		f := &flows[i]
		if keep != nil && !keep(f) {
			continue
		}
		if last != nil && last.UID == f.UID {
			last.add(f, now, days)
			continue
		}
		c, ok := by[f.UID]
		if !ok {
			c = &Convergence{UID: f.UID, NewPerDay: make([]int, days)}
			by[f.UID] = c
		}
		c.add(f, now, days)
		last = c
	}
	out := make([]Convergence, 0, len(by))
	for _, c := range by {
		c.Stable = now.Sub(c.LastNew) >= stableAfter
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Convergence) int { return cmp.Compare(a.UID, b.UID) })
	return out
}

func (c *Convergence) add(f *Flow, now time.Time, days int) {
	c.Flows++
	if f.FirstSeen.After(c.LastNew) {
		c.LastNew = f.FirstSeen
	}
	age := now.Sub(f.FirstSeen)
	if age >= 0 && age < time.Duration(days)*24*time.Hour {
		c.NewPerDay[days-1-int(age/(24*time.Hour))]++
	}
}

// ExportFormat names the export file format.
const ExportFormat = "egress-baseline/1"

// Export is one host's baseline, written by "egress-learn export" and
// merged by "egress-enforce generate --from".
type Export struct {
	Format   string    `json:"format"`
	Host     string    `json:"host"`
	Exported time.Time `json:"exported"`
	// Users names the UIDs of the flows, as this host resolves them.
	Users map[uint32]string `json:"users"`
	Flows []Flow            `json:"flows"`
}
