package plan

import "testing"

// TestCleanASCIITable: cleanASCII says a string is clean exactly when
// clean leaves it as it is, for every byte, on a comment line and in a
// quoted string, alone and amid clean bytes.
func TestCleanASCIITable(t *testing.T) {
	for _, quoted := range []bool{false, true} {
		for c := range 256 {
			for _, s := range []string{string([]byte{byte(c)}), "ab" + string([]byte{byte(c)}) + "9."} {
				if got, want := cleanASCII(s, quoted), clean(s, quoted, 64) == s; got != want {
					t.Errorf("cleanASCII(%q, quoted %v) = %v, clean keeps it: %v", s, quoted, got, want)
				}
			}
		}
	}
}
