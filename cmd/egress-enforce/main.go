// Command egress-enforce will turn the learned baseline into an nftables
// allow-list. It is not built yet.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "egress-enforce: not built yet; use egress-learn to record a baseline")
	os.Exit(1)
}
