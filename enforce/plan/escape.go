package plan

import (
	"fmt"
	"net/netip"
	"strings"
)

// Everything the nft script holds that did not come from this package's
// own constants goes through one of these: quote for strings in double
// quotes (comments), headerText for the header's comment lines, addrText
// for addresses, ident for names (the table, sets, the chain). Nothing
// else writes a string into the script, so nothing from a baseline, an
// export or the configuration can end a comment, a string or a line.

// commentChars are the punctuation characters kept inside a quoted
// string: nft has no escapes in strings, so a '"' would end it, and a
// backslash or a newline has no business there.
const commentChars = " .,:;-_+*=/#()[]@'!?%&"

// maxHeaderLine bounds a header line (a long source list is cut).
const maxHeaderLine = 1024

// clean maps s to what may stand where it goes: in a quoted string
// (letters, digits, commentChars) or on a comment line (printable ASCII
// but the backslash). Any other character becomes '?'; the result is cut
// at max bytes.
func clean(s string, quoted bool, max int) string {
	b := make([]byte, 0, min(len(s), max))
	for _, r := range s {
		if len(b) >= max {
			break
		}
		c := byte('?')
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			c = byte(r)
		case r < 0x80 && strings.IndexByte(commentChars, byte(r)) >= 0:
			c = byte(r)
		case !quoted && r > 0x20 && r < 0x7f && r != '\\':
			c = byte(r)
		}
		b = append(b, c)
	}
	return string(b)
}

// quote is s as an nft quoted string, cut to nft's comment length.
func quote(s string) string { return `"` + clean(s, true, maxComment-1) + `"` }

// appendQuoted appends quote(s), without copying s when it is clean.
func appendQuoted(b []byte, s string) []byte {
	if len(s) > maxComment-1 || !cleanASCII(s, true) {
		return append(b, quote(s)...)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// cleanASCII reports whether clean keeps every byte of s (quoted: in a
// quoted string; else on a comment line).
func cleanASCII(s string, quoted bool) bool {
	t := &cleanBytes[0]
	if quoted {
		t = &cleanBytes[1]
	}
	for i := 0; i < len(s); i++ {
		if !t[s[i]] {
			return false
		}
	}
	return true
}

// cleanBytes are the bytes clean keeps, by cleanByte: on a comment line
// [0], in a quoted string [1].
var cleanBytes = func() (t [2][256]bool) {
	for c := range 256 {
		t[0][c], t[1][c] = cleanByte(byte(c), false), cleanByte(byte(c), true)
	}
	return t
}()

// cleanByte reports whether clean keeps byte c.
func cleanByte(c byte, quoted bool) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
	case c < 0x80 && strings.IndexByte(commentChars, c) >= 0:
	case !quoted && c > 0x20 && c < 0x7f && c != '\\':
	default:
		return false
	}
	return true
}

// appendHeaderText appends headerText(s), without copying s when it is
// clean.
func appendHeaderText(b []byte, s string) []byte {
	if len(s) > maxHeaderLine || !cleanASCII(s, false) {
		return append(b, headerText(s)...)
	}
	return append(b, s...)
}

// headerText is s made safe for a "# ..." line of the script's header.
func headerText(s string) string { return clean(s, false, maxHeaderLine) }

// addrText writes an address as nft reads it: no zone (a zone is not an
// nft address, and it may hold any character), IPv4-mapped IPv6 unmapped.
func addrText(a netip.Addr) string { return a.WithZone("").Unmap().String() }

// appendAddr appends addrText(a).
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, addrText(a)...)
	}
	return a.WithZone("").Unmap().AppendTo(b)
}

// ident checks a name the script writes bare: the table, a set, the chain.
func ident(what, name string) error {
	if err := ValidIdentifier(name); err != nil {
		return fmt.Errorf("render the script: %s: %w", what, err)
	}
	return nil
}

// ValidIdentifier checks a name nft reads bare (a table): a letter or an
// underscore, then letters, digits, underscores or hyphens, 64 at most.
func ValidIdentifier(s string) error {
	ok := s != "" && len(s) <= 64
	for i, r := range s {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_'
		ok = ok && (letter || i > 0 && (r >= '0' && r <= '9' || r == '-'))
	}
	if !ok {
		return fmt.Errorf("%q is not a valid name (a letter or _, then letters, digits, _ or -; 64 at most)", s)
	}
	return nil
}

// safeText reports whether s, held in a quoted string or a comment of
// the plan, is shown as it is (clean changes nothing).
func safeText(s string, max int) bool { return clean(s, true, max) == s }

// CheckReason checks an always_allow reason: it becomes the rule's
// comment, so it holds only what a comment shows as it is.
func CheckReason(s string) error {
	const max = 64
	if len(s) > max || !safeText(s, max) {
		return fmt.Errorf("reason %q: at most %d letters, digits, spaces and %s", s, max, strings.TrimPrefix(commentChars, " "))
	}
	return nil
}

// CheckAddr checks an address from the input: valid, no IPv6 zone.
func CheckAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("not an address")
	case a.Zone() != "":
		return fmt.Errorf("address %q has a zone; addresses of rules have none", a.String())
	}
	return nil
}
