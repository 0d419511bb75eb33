package plan

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// A delta apply changes the table in the kernel from one plan to the next
// without replacing it: only the elements added, removed or changed, and
// the rules between the chain's unchanged head and tail, in one
// transaction. It needs to know the plan the kernel holds; an Index is all
// it needs of it (the plan without its elements and name rules, and a
// key and a hash per element and name rule), far smaller and quicker to
// read than the plan. A Patch records a plan as its changes from another,
// so that a generation applied as a delta is stored as one.

// SetSize is the size a set of n elements is created with: n and a quarter
// more, rounded up to a power of two (at least 64), so that a delta can
// add elements, and a table changed by deltas lists as the one a full
// apply of the same plan makes (nft list shows the size). 0 for none.
// A size lets the kernel size its hash table once: a 100,000-element apply
// takes half the time.
func SetSize(n int) int {
	if n == 0 {
		return 0
	}
	size := 64
	for size < n+n/4 {
		size *= 2
	}
	return size
}

// SetComment is the comment of the learned flows' sets.
const SetComment = "learned flows"

// ElementKey identifies an element in its set.
type ElementKey struct {
	UID   uint32
	IP    [16]byte // IPv4 in the first 4 bytes
	Proto uint8
	Port  uint16
}

// KeyOf is e's key.
func KeyOf(e *Element) ElementKey {
	k := ElementKey{UID: e.UID, Proto: e.Proto, Port: e.Port}
	if e.IP.Is4() {
		a4 := e.IP.As4()
		copy(k.IP[:], a4[:])
	} else if e.IP.IsValid() {
		k.IP = e.IP.As16()
	}
	return k
}

// element is the element of key k alone (no comment): what a deletion
// names.
func (k ElementKey) element(family int) Element {
	ip := netip.AddrFrom16(k.IP)
	if family == 4 {
		ip = netip.AddrFrom4([4]byte(k.IP[:4]))
	}
	return Element{UID: k.UID, IP: ip, Proto: k.Proto, Port: k.Port}
}

// IndexEntry is one element of an index: its key, and a hash of all of it
// (a changed comment, user or host list changes the hash).
type IndexEntry struct {
	Key ElementKey
	Sum uint64
}

// RuleSum identifies a name rule in an index (SHA-256, cut to 16 bytes: a
// patch removes rules by it).
type RuleSum [16]byte

// Index is what a delta needs to know of a plan.
type Index struct {
	// Head is the plan without its elements and name rules.
	Head *Plan
	// Sets holds each set's entries, in the order of Head.Sets, by key.
	Sets [][]IndexEntry
	// Rules are the name rules' sums, in the plan's order.
	Rules []RuleSum

	// pos[i][j] is the element of Sets[i][j] in its plan, when they are
	// not one for one (nil); not kept by Encode.
	pos [][]int32

	// What Encode made (an index is not changed once made).
	encodeOnce sync.Once
	encoded    []byte
}

// element is the plan's element of entry j of set i.
func (x *Index) element(p *Plan, i, j int) *Element {
	if x.pos != nil && x.pos[i] != nil {
		j = int(x.pos[i][j])
	}
	return &p.Sets[i].Elements[j]
}

// head is p without its elements and name rules.
func head(p *Plan) *Plan {
	h := *p
	h.Sets = make([]Set, len(p.Sets))
	for i, s := range p.Sets {
		s.Elements = nil
		h.Sets[i] = s
	}
	if p.Follow != nil {
		f := *p.Follow
		f.Rules = nil
		h.Follow = &f
	}
	return &h
}

// IndexOf indexes p.
func IndexOf(p *Plan) *Index {
	x := &Index{Head: head(p), Sets: make([][]IndexEntry, len(p.Sets))}
	x.pos = make([][]int32, len(p.Sets))
	// The rules' sums on another core, beside the elements'.
	var wg sync.WaitGroup
	if p.Follow != nil {
		x.Rules = make([]RuleSum, len(p.Follow.Rules))
		wg.Go(func() {
			var buf []byte
			for i := range p.Follow.Rules {
				x.Rules[i] = ruleSum(&p.Follow.Rules[i], &buf)
			}
		})
	}
	defer wg.Wait()
	var buf []byte
	for i, s := range p.Sets {
		entries := make([]IndexEntry, len(s.Elements))
		for j := range s.Elements {
			e := &s.Elements[j]
			entries[j] = IndexEntry{Key: KeyOf(e), Sum: elementSum(e, &buf)}
		}
		// A set of Build is in key order already: the entries are its
		// elements, one for one.
		if !slices.IsSortedFunc(entries, func(a, b IndexEntry) int { return compareKeys(a.Key, b.Key) }) {
			x.pos[i] = make([]int32, len(entries))
			for j := range x.pos[i] {
				x.pos[i][j] = int32(j)
			}
			slices.SortFunc(x.pos[i], func(a, b int32) int { return compareKeys(entries[a].Key, entries[b].Key) })
			sorted := make([]IndexEntry, len(entries))
			for j, k := range x.pos[i] {
				sorted[j] = entries[k]
			}
			entries = sorted
		}
		x.Sets[i] = entries
	}
	return x
}

// elementSum hashes every field of an element (xxhash of a binary form:
// a collision would only hide a changed comment).
func elementSum(e *Element, buf *[]byte) uint64 {
	b := (*buf)[:0]
	b = binary.BigEndian.AppendUint32(b, e.UID)
	b = e.IP.AppendTo(b)
	b = append(b, 0, e.Proto)
	b = binary.BigEndian.AppendUint16(b, e.Port)
	b = appendField(appendField(b, e.User), e.Comment)
	for _, h := range e.Hosts {
		b = appendField(b, h)
	}
	if len(e.Names) > 0 { // the names a name check wants; none: the sum of plans before them
		b = append(b, 0xff)
		for _, n := range e.Names {
			b = appendField(b, n)
		}
	}
	*buf = b
	return xxhash.Sum64(b)
}

// appendField appends s with its length first.
func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// ruleSum hashes every field of a name rule (SHA-256 of a binary form: a
// patch removes rules by their sums).
func ruleSum(r *NameRule, buf *[]byte) RuleSum {
	b := binary.BigEndian.AppendUint32((*buf)[:0], r.UID)
	b = append(b, r.Proto)
	b = binary.BigEndian.AppendUint16(b, r.Port)
	b = appendField(appendField(appendField(b, r.Name), r.User), r.Source)
	*buf = b
	s := sha256.Sum256(b)
	return RuleSum(s[:16])
}

func compareKeys(a, b ElementKey) int {
	switch {
	case a.UID != b.UID:
		return cmpU(a.UID, b.UID)
	case a.IP != b.IP:
		return slices.Compare(a.IP[:], b.IP[:])
	case a.Proto != b.Proto:
		return cmpU(uint32(a.Proto), uint32(b.Proto))
	}
	return cmpU(uint32(a.Port), uint32(b.Port))
}

func cmpU(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ErrNoDelta wraps the reason a delta cannot take one table to the other:
// the table must be replaced.
var ErrNoDelta = errors.New("a full replace is needed")

// Delta turns a table of one plan into a table of the next.
type Delta struct {
	// Del and Add are the elements to delete and to add, by set; an
	// element whose comment changed is in both (Changed counts them).
	Del, Add map[string][]Element
	Changed  int
	// Policy is the chain's new policy ("" when it stays).
	Policy string
	// Head and Tail rules of the chain stay; the old plan's rules in
	// between are deleted, the new plan's inserted in their place.
	Head, Tail int
	// FromRules is how many rules the old plan has.
	FromRules int
}

// Elements is how many elements the delta deletes and adds.
func (d *Delta) Elements() (del, add int) {
	for _, l := range d.Del {
		del += len(l)
	}
	for _, l := range d.Add {
		add += len(l)
	}
	return del, add
}

// RulesChanged is how many rules the delta deletes and inserts (toRules:
// the new plan's number of rules).
func (d *Delta) RulesChanged(toRules int) (del, ins int) {
	return d.FromRules - d.Head - d.Tail, toRules - d.Head - d.Tail
}

// NewDelta is the delta from the plan indexed by from to the plan to; the
// error (ErrNoDelta) says why there is none.
func NewDelta(from *Index, to *Plan) (*Delta, error) {
	return DeltaOf(from, IndexOf(to), to)
}

// DeltaOf is NewDelta with to's index at hand.
func DeltaOf(from, toIndex *Index, to *Plan) (*Delta, error) {
	if why := deltaBlocked(from.Head, to); why != "" {
		return nil, fmt.Errorf("%w: %s", ErrNoDelta, why)
	}
	d := &Delta{Del: map[string][]Element{}, Add: map[string][]Element{}, FromRules: len(from.Head.Rules)}
	for i, s := range to.Sets {
		del, add, changed := diffSet(from.Sets[i], toIndex, to, i)
		if len(del) > 0 {
			d.Del[s.Name] = del
		}
		if len(add) > 0 {
			d.Add[s.Name] = add
		}
		d.Changed += changed
	}
	if from.Head.Chain.Policy != to.Chain.Policy {
		d.Policy = to.Chain.Policy
	}
	d.Head, d.Tail = keptRules(from.Head.Rules, to.Rules)
	return d, nil
}

// deltaBlocked says why no delta takes a table of plan from to one of
// plan to ("": one does): everything but the elements, the chain's policy
// and its rules must be the same.
func deltaBlocked(from, to *Plan) string {
	switch {
	case from.Table != to.Table || from.Family != to.Family:
		return "another table"
	case from.Chain.Name != to.Chain.Name || from.Chain.Hook != to.Chain.Hook || from.Chain.Priority != to.Chain.Priority:
		return "another chain"
	case from.ByService() || to.ByService():
		return "per-service sets (their elements follow the services' cgroup ids)"
	case len(from.ServiceSets) > 0 || len(to.ServiceSets) > 0:
		return "services staged (their sets follow the services' cgroup ids)"
	case len(from.Sets) != len(to.Sets):
		return "other sets"
	case !slices.EqualFunc(from.UserSets, to.UserSets, func(a, b UserSet) bool { return a.Name == b.Name && slices.Equal(a.UIDs, b.UIDs) }):
		return "other users staged"
	case (from.Follow == nil) != (to.Follow == nil):
		return "names followed or not"
	case from.Follow != nil && from.Follow.TTLFloor != to.Follow.TTLFloor:
		return "another follow_ttl_floor (the follow sets' timeout)"
	}
	for i, s := range to.Sets {
		f := from.Sets[i]
		n := len(s.Elements)
		if f.Name != s.Name || f.Family != s.Family || f.Comment != s.Comment {
			return "set " + s.Name + " is declared otherwise"
		}
		if f.Capacity != SetSize(n) || s.Capacity != SetSize(n) {
			return "set " + s.Name + " needs size " + strconv.Itoa(SetSize(n)) + ", it has " + strconv.Itoa(f.Size())
		}
	}
	return ""
}

// diffSet compares the index entries of a set with those of set i of
// plan to (indexed by x): both in key order, a merge.
func diffSet(from []IndexEntry, x *Index, to *Plan, i int) (del, add []Element, changed int) {
	news, family := x.Sets[i], to.Sets[i].Family
	f, j := 0, 0
	for f < len(from) || j < len(news) {
		var c int
		switch {
		case f == len(from):
			c = 1
		case j == len(news):
			c = -1
		default:
			c = compareKeys(from[f].Key, news[j].Key)
		}
		switch {
		case c < 0:
			del = append(del, from[f].Key.element(family))
			f++
		case c > 0:
			add = append(add, *x.element(to, i, j))
			j++
		default:
			if news[j].Sum != from[f].Sum {
				del = append(del, from[f].Key.element(family))
				add = append(add, *x.element(to, i, j))
				changed++
			}
			f, j = f+1, j+1
		}
	}
	return del, add, changed
}

// sameRule reports whether two rules render the same: same comment (a
// rule's identity) and same statement.
func sameRule(a, b *Rule) bool { return a.Comment == b.Comment && a.Text == b.Text }

// keptRules is how many rules two chains share at their start and, after
// those, at their end.
func keptRules(from, to []Rule) (head, tail int) {
	for head < len(from) && head < len(to) && sameRule(&from[head], &to[head]) {
		head++
	}
	for tail < len(from)-head && tail < len(to)-head && sameRule(&from[len(from)-1-tail], &to[len(to)-1-tail]) {
		tail++
	}
	return head, tail
}

// encodeKey appends k in 24 bytes (for the index file).
func encodeKey(b []byte, k ElementKey) []byte {
	b = binary.BigEndian.AppendUint32(b, k.UID)
	b = append(b, k.IP[:]...)
	b = append(b, k.Proto, 0)
	return binary.BigEndian.AppendUint16(b, k.Port)
}

func decodeKey(b []byte) ElementKey {
	return ElementKey{UID: binary.BigEndian.Uint32(b), IP: [16]byte(b[4:20]), Proto: b[20], Port: binary.BigEndian.Uint16(b[22:24])}
}
