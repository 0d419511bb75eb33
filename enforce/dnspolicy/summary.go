package dnspolicy

import (
	"sort"
	"strings"
	"time"
)

// Count is what is known of one denied name of one user: from the
// kernel's reports, kept in the store.
type Count struct {
	UID       uint32    `json:"uid"`
	Name      string    `json:"name"` // "" for queries that could not be parsed
	Hits      uint64    `json:"hits"`
	Dropped   uint64    `json:"dropped"` // of the hits, stopped (enforce); the others passed (audit)
	Malformed uint64    `json:"malformed"`
	First     time.Time `json:"first_seen"`
	Last      time.Time `json:"last_seen"`
}

// Tally counts denials by user and name.
func Tally(ds []Denial) []Count {
	idx := map[[2]any]int{}
	var out []Count
	for _, d := range ds {
		k := [2]any{d.UID, d.Name}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Count{UID: d.UID, Name: d.Name, First: d.Time})
		}
		c := &out[i]
		c.Hits++
		if d.Dropped {
			c.Dropped++
		}
		if d.Malformed {
			c.Malformed++
		}
		if d.Time.Before(c.First) {
			c.First = d.Time
		}
		if d.Time.After(c.Last) {
			c.Last = d.Time
		}
	}
	return out
}

// SummaryOptions shape a summary.
type SummaryOptions struct {
	TopNames   int // per user (default 10)
	TopParents int // per user (default 5)
	// TunnelNames is how many distinct names under one parent domain make
	// a tunnelling signature (default 50).
	TunnelNames int
}

// Summary is the denied names by user.
type Summary struct {
	Users []UserSummary `json:"users"`
}

// UserSummary is one user's denied names.
type UserSummary struct {
	UID       uint32   `json:"uid"`
	Queries   uint64   `json:"queries"`
	Dropped   uint64   `json:"dropped"`
	Malformed uint64   `json:"malformed"`
	Names     int      `json:"names"` // distinct
	Top       []Count  `json:"top"`
	Parents   []Parent `json:"parents"`
}

// Parent is a parent domain of denied names (the name without its first
// label).
type Parent struct {
	Domain  string `json:"domain"`
	Queries uint64 `json:"queries"`
	Names   int    `json:"names"` // distinct names under it
	// Tunnel: at least TunnelNames distinct names under one parent, the
	// signature of data sent out in labels.
	Tunnel bool `json:"tunnel"`
}

// ParentOf is name without its first label; a name of one or two labels
// is its own parent (a burst of distinct top-level domains is no tunnel).
func ParentOf(name string) string {
	if strings.Count(name, ".") < 2 {
		return name
	}
	return name[strings.IndexByte(name, '.')+1:]
}

// Summarize orders users by queries denied, most first, each with its
// most frequent names and parent domains.
func Summarize(counts []Count, o SummaryOptions) Summary {
	if o.TopNames <= 0 {
		o.TopNames = 10
	}
	if o.TopParents <= 0 {
		o.TopParents = 5
	}
	if o.TunnelNames <= 0 {
		o.TunnelNames = 50
	}
	byUID := map[uint32][]Count{}
	for _, c := range counts {
		byUID[c.UID] = append(byUID[c.UID], c)
	}
	var s Summary
	for uid, cs := range byUID {
		s.Users = append(s.Users, summarizeUser(uid, cs, o))
	}
	sort.Slice(s.Users, func(i, j int) bool {
		a, b := s.Users[i], s.Users[j]
		return a.Queries > b.Queries || (a.Queries == b.Queries && a.UID < b.UID)
	})
	return s
}

func summarizeUser(uid uint32, cs []Count, o SummaryOptions) UserSummary {
	u := UserSummary{UID: uid}
	parents := map[string]*Parent{}
	for _, c := range cs {
		u.Queries += c.Hits
		u.Dropped += c.Dropped
		u.Malformed += c.Malformed
		if c.Name == "" {
			continue
		}
		u.Names++
		d := ParentOf(c.Name)
		p := parents[d]
		if p == nil {
			p = &Parent{Domain: d}
			parents[d] = p
		}
		p.Queries += c.Hits
		p.Names++
	}
	sort.Slice(cs, func(i, j int) bool {
		return cs[i].Hits > cs[j].Hits || (cs[i].Hits == cs[j].Hits && cs[i].Name < cs[j].Name)
	})
	u.Top = cs[:min(len(cs), o.TopNames)]
	for _, p := range parents {
		p.Tunnel = p.Names >= o.TunnelNames
		u.Parents = append(u.Parents, *p)
	}
	sort.Slice(u.Parents, func(i, j int) bool {
		a, b := u.Parents[i], u.Parents[j]
		return a.Names > b.Names || (a.Names == b.Names && (a.Queries > b.Queries || a.Queries == b.Queries && a.Domain < b.Domain))
	})
	u.Parents = u.Parents[:min(len(u.Parents), o.TopParents)]
	return u
}
