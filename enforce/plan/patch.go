package plan

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// Patch records a plan as its changes from another plan, its base: what a
// generation applied as a delta stores, far smaller than its plan.
// ApplyPatch makes the plan again, and checks it against Sum.
type Patch struct {
	// Base is the generation whose plan this one changes (as its recorder
	// numbers generations).
	Base uint64 `json:"base"`
	// Head is the plan without its elements and name rules.
	Head *Plan `json:"head"`
	// Added and Removed are elements by set; a removed one has only its
	// key (an element whose comment changed is in both).
	Added   map[string][]Element `json:"added,omitempty"`
	Removed map[string][]Element `json:"removed,omitempty"`
	// RulesAdded and RulesRemoved are the name rules added, and the sums
	// of those removed.
	RulesAdded   []NameRule `json:"rules_added,omitempty"`
	RulesRemoved []RuleSum  `json:"rules_removed,omitempty"`
	// Sum is the SHA-256 of the made plan's index (Index.Encode).
	Sum string `json:"sum"`
}

// MarshalText writes a rule sum in hex.
func (s RuleSum) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(s[:])), nil }

// UnmarshalText reads a rule sum in hex.
func (s *RuleSum) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(s) {
		return fmt.Errorf("rule sum %q: want %d hex bytes", b, len(s))
	}
	_, err := hex.Decode(s[:], b)
	return err
}

// patchPrefix starts a patch's JSON, and nothing else's (a plan's starts
// with its table).
const patchPrefix = `{"patch":`

// patchFile is a patch as stored.
type patchFile struct {
	Patch *Patch `json:"patch"`
}

// PatchBase reads the base of a patch from the start of its JSON (as JSON
// writes it: `{"patch":{"base":N,`); 0 when it is no patch.
func PatchBase(start []byte) uint64 {
	rest, ok := bytes.CutPrefix(start, []byte(patchPrefix+`{"base":`))
	if !ok {
		return 0
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// IsPatch reports whether stored plan bytes hold a patch.
func IsPatch(data []byte) bool { return bytes.HasPrefix(data, []byte(patchPrefix)) }

// JSON encodes the patch as it is stored.
func (pt *Patch) JSON() ([]byte, error) { return json.Marshal(patchFile{pt}) }

// DecodePatch reads a patch's JSON.
func DecodePatch(data []byte) (*Patch, error) {
	var f patchFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("decode plan patch: %w", err)
	}
	if f.Patch == nil || f.Patch.Head == nil {
		return nil, errors.New("decode plan patch: no patch")
	}
	return f.Patch, nil
}

// MakePatch records plan to (indexed by toIndex) as delta d from the plan
// of generation base (indexed by from).
func MakePatch(base uint64, from *Index, to *Plan, toIndex *Index, d *Delta) *Patch {
	pt := &Patch{Base: base, Head: head(to), Added: d.Add, Removed: d.Del}
	sum := sha256.Sum256(toIndex.Encode())
	pt.Sum = hex.EncodeToString(sum[:])
	if to.Follow == nil {
		return pt
	}
	added, removed := diffRules(from.Rules, toIndex.Rules)
	for _, i := range added {
		pt.RulesAdded = append(pt.RulesAdded, to.Follow.Rules[i])
	}
	pt.RulesRemoved = removed
	return pt
}

// diffRules compares the sums of two lists of name rules, each sorted by
// content and without two the same (Build makes them so): the positions of
// the new rules not in old, and the old sums not in new. Both lists are
// walked together; at a difference a small window ahead says which side
// moved on (sound for sorted lists: an old rule met later in new had
// nothing between); without a match in it, a map of the rest decides.
func diffRules(old, new []RuleSum) (added []int, removed []RuleSum) {
	const window = 32
	i, j := 0, 0
	for i < len(old) && j < len(new) {
		if old[i] == new[j] {
			i, j = i+1, j+1
			continue
		}
		if a := slices.Index(old[i+1:min(len(old), i+window)], new[j]); a >= 0 {
			removed = append(removed, old[i:i+1+a]...)
			i += 1 + a
			continue
		}
		if b := slices.Index(new[j+1:min(len(new), j+window)], old[i]); b >= 0 {
			for k := j; k <= j+b; k++ {
				added = append(added, k)
			}
			j += 1 + b
			continue
		}
		return diffRulesByMap(old[i:], new[j:], j, added, removed)
	}
	removed = append(removed, old[i:]...)
	for ; j < len(new); j++ {
		added = append(added, j)
	}
	return added, removed
}

// diffRulesByMap is diffRules of what is left (new starting at position
// off), with a map.
func diffRulesByMap(old, new []RuleSum, off int, added []int, removed []RuleSum) ([]int, []RuleSum) {
	had := make(map[RuleSum]int32, len(old))
	for i, s := range old {
		had[s] = int32(i)
	}
	kept := make([]bool, len(old))
	for j, s := range new {
		if i, ok := had[s]; ok {
			kept[i] = true
		} else {
			added = append(added, off+j)
		}
	}
	for i, s := range old {
		if !kept[i] {
			removed = append(removed, s)
		}
	}
	return added, removed
}

// ApplyPatch makes the plan pt records from its base's plan, and checks
// that it is that plan (its index's sum).
func ApplyPatch(base *Plan, pt *Patch) (*Plan, error) {
	p := *pt.Head
	if len(p.Sets) != len(base.Sets) {
		return nil, fmt.Errorf("apply plan patch: %d sets, its base has %d", len(p.Sets), len(base.Sets))
	}
	p.Sets = slices.Clone(p.Sets)
	for i := range p.Sets {
		s := &p.Sets[i]
		if s.Name != base.Sets[i].Name {
			return nil, fmt.Errorf("apply plan patch: set %s, its base has %s", s.Name, base.Sets[i].Name)
		}
		elems, err := patchSet(base.Sets[i].Elements, pt.Removed[s.Name], pt.Added[s.Name])
		if err != nil {
			return nil, fmt.Errorf("apply plan patch: set %s: %w", s.Name, err)
		}
		s.Elements = elems
	}
	if p.Follow != nil {
		f := *p.Follow
		f.Rules = patchRules(base.Follow, pt)
		p.Follow = &f
	}
	sum := sha256.Sum256(IndexOf(&p).Encode())
	if hex.EncodeToString(sum[:]) != pt.Sum {
		return nil, errors.New("apply plan patch: the plan made does not match the one recorded (the base is not the plan the patch was made from)")
	}
	return &p, nil
}

// patchSet is base's elements without those removed, with those added, in
// key order.
func patchSet(base, removed, added []Element) ([]Element, error) {
	gone := make(map[ElementKey]bool, len(removed))
	for i := range removed {
		gone[KeyOf(&removed[i])] = true
	}
	out := make([]Element, 0, len(base)-len(removed)+len(added))
	for i := range base {
		if k := KeyOf(&base[i]); gone[k] {
			delete(gone, k)
			continue
		}
		out = append(out, base[i])
	}
	if len(gone) > 0 {
		return nil, fmt.Errorf("%d removed elements are not in its base", len(gone))
	}
	out = append(out, added...)
	slices.SortFunc(out, func(a, b Element) int { return a.flowKey().Compare(b.flowKey()) })
	return out, nil
}

// patchRules is base's name rules without those removed, with those added,
// in order.
func patchRules(base *FollowSpec, pt *Patch) []NameRule {
	gone := map[RuleSum]bool{}
	for _, s := range pt.RulesRemoved {
		gone[s] = true
	}
	out := []NameRule{}
	if base != nil {
		var buf []byte
		for i := range base.Rules {
			if !gone[ruleSum(&base.Rules[i], &buf)] {
				out = append(out, base.Rules[i])
			}
		}
	}
	out = append(out, pt.RulesAdded...)
	slices.SortFunc(out, compareNameRules)
	return out
}

// indexMagic starts an encoded index.
const indexMagic = "egress-plan-index/1\n"

// Encode writes the index in binary: its head as JSON, each set's entries
// (a 24-byte key and an 8-byte hash each), the name rules' sums.
func (x *Index) Encode() []byte {
	// Made once: a delta's patch sums it while its file is written.
	x.encodeOnce.Do(func() { x.encoded = x.encode() })
	return x.encoded
}

func (x *Index) encode() []byte {
	headJSON, _ := json.Marshal(x.Head) // a plan always encodes
	// magic, head (length first), set count, sets, rule count, rules
	n := len(indexMagic) + 4 + len(headJSON) + 4 + 4 + 16*len(x.Rules)
	for _, s := range x.Sets {
		n += 4 + 32*len(s)
	}
	b, _ := x.encodeTo(make([]byte, 0, n), headJSON, nil)
	return b
}

// WriteEncoded writes what Encode gives to w as it is made, through a
// buffer of 64 KiB: an index that is only written (a replace's) is not
// made whole in fresh memory (4.8 MB at 100,000 elements).
func (x *Index) WriteEncoded(w io.Writer) error {
	headJSON, _ := json.Marshal(x.Head) // a plan always encodes
	flush := func(b []byte) ([]byte, error) {
		_, err := w.Write(b)
		return b[:0], err
	}
	b, err := x.encodeTo(make([]byte, 0, 64<<10), headJSON, flush)
	if err != nil {
		return err
	}
	_, err = flush(b)
	return err
}

// encodeTo appends the encoded index to b; with flush, b is handed to it
// whenever it has less than 64 bytes of room left (flush gives back the
// buffer to go on with).
func (x *Index) encodeTo(b, headJSON []byte, flush func([]byte) ([]byte, error)) ([]byte, error) {
	var err error
	more := func() {
		if flush != nil && err == nil && cap(b)-len(b) < 64 {
			b, err = flush(b)
		}
	}
	b = append(b, indexMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(headJSON)))
	b = append(b, headJSON...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(x.Sets)))
	for _, s := range x.Sets {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		for _, e := range s {
			more()
			b = encodeKey(b, e.Key)
			b = binary.BigEndian.AppendUint64(b, e.Sum)
		}
	}
	more()
	b = binary.BigEndian.AppendUint32(b, uint32(len(x.Rules)))
	for _, r := range x.Rules {
		more()
		b = append(b, r[:]...)
	}
	return b, err
}

// DecodeIndex reads what Encode wrote.
func DecodeIndex(b []byte) (*Index, error) {
	bad := func(what string) (*Index, error) { return nil, fmt.Errorf("decode plan index: %s", what) }
	if !bytes.HasPrefix(b, []byte(indexMagic)) {
		return bad("not an index")
	}
	r := indexReader{b: b[len(indexMagic):]}
	headJSON := r.next(int(r.u32()))
	x := &Index{Head: &Plan{}}
	if r.bad || json.Unmarshal(headJSON, x.Head) != nil {
		return bad("its head")
	}
	x.Sets = make([][]IndexEntry, r.count(1<<10, 4))
	for i := range x.Sets {
		x.Sets[i] = make([]IndexEntry, r.count(1<<30, 32))
		for j := range x.Sets[i] {
			e := r.next(32)
			if r.bad {
				return bad("a set")
			}
			x.Sets[i][j] = IndexEntry{Key: decodeKey(e), Sum: binary.BigEndian.Uint64(e[24:])}
		}
	}
	x.Rules = make([]RuleSum, r.count(1<<30, 16))
	for i := range x.Rules {
		copy(x.Rules[i][:], r.next(16))
	}
	if r.bad || len(r.b) != 0 || len(x.Sets) != len(x.Head.Sets) {
		return bad("its length")
	}
	return x, nil
}

// indexReader reads an encoded index; bad is set at the first short read.
type indexReader struct {
	b   []byte
	bad bool
}

func (r *indexReader) next(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return make([]byte, max(n, 0))
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *indexReader) u32() uint32 { return binary.BigEndian.Uint32(r.next(4)) }

// count reads a count of items of size bytes: at most limit, and no more
// than the bytes left hold.
func (r *indexReader) count(limit, size int) int {
	n := int(r.u32())
	if r.bad || n > limit || n*size > len(r.b) {
		r.bad = true
		return 0
	}
	return n
}
