package follow

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/store"
)

// Stats are the follower's counters.
type Stats struct {
	Queries     uint64 `json:"queries"`
	Accepted    uint64 `json:"answers_used"`
	NotResolver uint64 `json:"ignored_not_resolver"`
	NoQuery     uint64 `json:"ignored_no_query"`
	Mismatch    uint64 `json:"ignored_question_mismatch"`
	Malformed   uint64 `json:"ignored_malformed"`
	OtherNetns  uint64 `json:"ignored_other_netns"`
	NoRule      uint64 `json:"not_followed"`
	// OwnerMismatch counts address records left out of used answers:
	// their owner is not the question or a name of its CNAME chain.
	OwnerMismatch uint64 `json:"records_owner_mismatch"`
	// OverShare counts queries the kernel did not remember because their
	// user's share of the query table was full; QueriesExpired those
	// removed unanswered after QueryLife.
	OverShare      uint64 `json:"queries_over_share"`
	QueriesExpired uint64 `json:"queries_expired"`
	Authorized     uint64 `json:"authorized"`
	// Marked counts the connects the follower's connect program marked:
	// their destination was authorized by an answer. Most need no mark:
	// a learned or followed set accepts them first (rules before the
	// mark rules); MarkRules says what the mark alone let through.
	Marked uint64 `json:"connects_marked"`
	// MarkRules are the kernel counters of the table's follow-mark rules,
	// summed, since the table was last applied: the packets accepted on
	// the mark alone, to a just-resolved destination no set held yet (nil:
	// the table has no such rule, or could not be read).
	MarkRules *nft.Counter `json:"mark_rules_accepted,omitempty"`
	// MarkDropped counts packets carrying the follow mark that the mark
	// check dropped: set by their process, or sent elsewhere than the
	// destination their socket was marked for.
	MarkDropped uint64 `json:"mark_dropped"`
	// FollowedFull counts addresses not authorized because the name
	// check's view of the followed destinations was full (fail closed).
	FollowedFull uint64 `json:"followed_full"`
	Lost         uint64 `json:"lost"`
	Added        uint64 `json:"elements_added"`
	Refreshed    uint64 `json:"elements_refreshed"`
	BoundDropped uint64 `json:"dropped_by_bound"`
	// TTLCapped counts addresses whose TTL was above follow_ttl_max.
	TTLCapped  uint64 `json:"ttl_capped"`
	NftErrors  uint64 `json:"nft_errors"`
	Generation uint64 `json:"generation"`
	Rules      int    `json:"rules"`
	// Latency quantiles of answer-to-element, in microseconds.
	LatencyP50 float64   `json:"latency_p50_us"`
	LatencyP99 float64   `json:"latency_p99_us"`
	Updated    time.Time `json:"updated"`
}

// Ignored is every answer the follower did not use because it did not
// trust it.
func (s Stats) Ignored() uint64 {
	return s.NotResolver + s.NoQuery + s.Mismatch + s.Malformed + s.OtherNetns
}

// sameCounters reports whether s and o count the same (their times and
// latencies aside).
func (s Stats) sameCounters(o Stats) bool {
	s.Updated, o.Updated = time.Time{}, time.Time{}
	s.LatencyP50, s.LatencyP99, o.LatencyP50, o.LatencyP99 = 0, 0, 0, 0
	sm, om := s.MarkRules, o.MarkRules
	s.MarkRules, o.MarkRules = nil, nil
	return s == o && (sm == nil) == (om == nil) && (sm == nil || *sm == *om)
}

func statsKey(t nft.Target, table string) string { return "follow-stats " + t.Path() + " " + table }

// ReadStats returns the counters the follower of the target last
// saved, if any.
func ReadStats(st *store.Store, t nft.Target, table string) (*Stats, error) {
	data, err := st.GetMeta(statsKey(t, table))
	if err != nil || data == nil {
		return nil, err
	}
	var s Stats
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode follower counters: %w", err)
	}
	return &s, nil
}
