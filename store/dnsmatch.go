package store

// DNSMatch counts what a learner did with the DNS queries and answers it
// saw. An answer is used only when it reaches a socket that sent a query
// with the same id and question to the server it comes from, and only
// once; every other answer is ignored and counted by reason.
type DNSMatch struct {
	Queries        uint64 `json:"queries"`         // queries remembered
	QueriesEvicted uint64 `json:"queries_evicted"` // pushed out of the table before an answer
	Matched        uint64 `json:"matched"`         // answers used
	NoQuery        uint64 `json:"no_query"`        // the socket sent no query with that id (or it was answered already)
	Mismatch       uint64 `json:"mismatch"`        // another question than the query's
	OtherServer    uint64 `json:"other_server"`    // from another address or port than the query went to
	Evicted        uint64 `json:"evicted"`         // the query was pushed out: over its user's share, or the table full
	Malformed      uint64 `json:"malformed"`       // no DNS header and single question to match
}

// Ignored is every answer not used.
func (s DNSMatch) Ignored() uint64 {
	return s.NoQuery + s.Mismatch + s.OtherServer + s.Evicted + s.Malformed
}

// Plus adds o's counts to s's.
func (s DNSMatch) Plus(o DNSMatch) DNSMatch {
	return DNSMatch{Queries: s.Queries + o.Queries, QueriesEvicted: s.QueriesEvicted + o.QueriesEvicted, Matched: s.Matched + o.Matched,
		NoQuery: s.NoQuery + o.NoQuery, Mismatch: s.Mismatch + o.Mismatch, OtherServer: s.OtherServer + o.OtherServer,
		Evicted: s.Evicted + o.Evicted, Malformed: s.Malformed + o.Malformed}
}
