//go:build linux

package follow

import (
	"fmt"
	"path/filepath"
	"strings"
)

// pinPath is the pin directory of a namespace and table under root
// (without creating it). bpffs refuses dots in names; the table's name may
// have some.
func pinPath(root, table string, netns uint64) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, table)
	return filepath.Join(root, fmt.Sprintf("%s-netns-%x", safe, netns))
}

// PinPath is pinPath, for status: where a follower and a name check of
// that namespace and table pin.
func PinPath(root, table string, netns uint64) string { return pinPath(root, table, netns) }
