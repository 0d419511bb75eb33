package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables/userdata"

	"github.com/egresskit/egress/enforce/plan"
)

// Every apply stamps the table with the generation whose plan it holds
// and the number of elements of each of its sets: a record in the user
// data of the chain's first rule, beside its comment, of a type nft does
// not show (nft list shows the table as it would without it). A delta apply
// changes a table only when the stamp names the generation the store says
// the kernel holds; status reads the set sizes from it, without a dump.

// stampType is the user data type of the stamp in a rule (nft knows types
// 0 and 1, the comment and an ebtables policy, and skips the others).
const stampType userdata.Type = 0xe1

// ruleTagType is the user data type of a rule's tag: a hash of the rule
// as the plan has it (its comment and statement). A rule changed or added
// by hand (nft replace rule, nft add rule) carries none, so a delta apply
// sees it without comparing expressions.
const ruleTagType userdata.Type = 0xe2

// ruleTag is the tag of a rule of comment and statement text.
func ruleTag(comment, text string) string {
	sum := sha256.Sum256([]byte(comment + "\x00" + text))
	return hex.EncodeToString(sum[:8])
}

// Stamp is what a table says of itself.
type Stamp struct {
	Generation uint64         // the generation whose plan it is (0: not known)
	Elements   map[string]int // by set
}

// stampOf is the stamp of plan p as generation gen.
func stampOf(p *plan.Plan, gen uint64) Stamp {
	s := Stamp{Generation: gen, Elements: map[string]int{}}
	for _, set := range p.Sets {
		s.Elements[set.Name] = len(set.Elements)
	}
	return s
}

// String is the stamp as stored: "egress plan=12 allow4=90 allow6=10".
func (s Stamp) String() string {
	var b strings.Builder
	b.WriteString("egress plan=" + strconv.FormatUint(s.Generation, 10))
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.Elements {
			if !yield(k) {
				return
			}
		}
	}) {
		b.WriteString(" " + name + "=" + strconv.Itoa(s.Elements[name]))
	}
	return b.String()
}

// appendStamp appends the stamp to a rule's user data.
func appendStamp(udata []byte, s Stamp) []byte {
	return userdata.AppendString(udata, stampType, s.String())
}

// parseStamp reads the stamp of a rule's user data; ok is false when it
// has none (a table applied by nft -f, or by an earlier version).
func parseStamp(udata []byte) (s Stamp, ok bool, err error) {
	text, ok := userdata.GetString(udata, stampType)
	if !ok {
		return s, false, nil
	}
	fields := strings.Fields(text)
	if len(fields) < 2 || fields[0] != "egress" {
		return s, true, fmt.Errorf("table stamp %q", text)
	}
	s.Elements = map[string]int{}
	for _, f := range fields[1:] {
		k, v, found := strings.Cut(f, "=")
		n, perr := strconv.ParseUint(v, 10, 64)
		if !found || perr != nil {
			return s, true, fmt.Errorf("table stamp %q", text)
		}
		if k == "plan" {
			s.Generation = n
		} else {
			s.Elements[k] = int(n)
		}
	}
	return s, true, nil
}
