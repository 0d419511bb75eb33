//go:build linux

package dnspolicy

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// The kernel reads a name eight bytes at a time: it lowers A-Z only, and
// tells a dot or NUL inside a label from a length byte that is 46 ('.')
// by counting. TestProgramAgreesOnWordEdges checks that against the
// reference on names made for it: labels of 46 characters, lengths
// around multiples of eight, the bytes next to 'A' and 'Z', the same
// with the high bit set (0xC1 is no capital), dots and NULs.
func TestProgramAgreesOnWordEdges(t *testing.T) {
	l46 := strings.Repeat("q", 46)
	entries, _ := Dedup([]Entry{
		{UID: 0, Name: l46 + ".lab"}, {UID: 0, Name: "*." + l46 + ".lab"}, {UID: 0, Name: "abcdefg.lab"},
		{UID: 0, Name: "abcdefgh.abcdefgh.lab"}, {UID: AllUsers, Name: "*.za.lab"}, {UID: 0, Name: "key.lab"},
	})
	objs := loadForRun(t, Enforce, entries)
	r := rand.New(rand.NewPCG(46, 8))
	agreeWithReference(t, objs, entries, walkQueries(), func() []byte { return wireQuery(edgeLabels(r)) })
}

// edgeLabels is a name near the entries of TestProgramAgreesOnWordEdges,
// with bytes changed now and then.
func edgeLabels(r *rand.Rand) []string {
	bases := [][]string{
		{strings.Repeat("q", 46), "lab"}, {"x", strings.Repeat("q", 46), "lab"}, {"abcdefg", "lab"},
		{"abcdefgh", "abcdefgh", "lab"}, {"y", "za", "lab"}, {"key", "lab"},
		{strings.Repeat("q", 46), strings.Repeat("Q", 46), "za", "lab"}, {"\xe2\x84\xaaey", "lab"},
	}
	labels := append([]string(nil), bases[r.IntN(len(bases))]...)
	if r.IntN(4) == 0 { // a label of 7 to 17 characters in front
		labels = append([]string{strings.Repeat("w", 7+r.IntN(11))}, labels...)
	}
	for range r.IntN(3) {
		i := r.IntN(len(labels))
		lab := []byte(labels[i])
		lab[r.IntN(len(lab))] = "@AZ[`az{\xc1\xda\xe1\xfa.\x00"[r.IntN(14)]
		labels[i] = string(lab)
	}
	return labels
}
