//go:build !linux

package baseline

import "os"

// readMemoFile reads the memo at path.
func readMemoFile(path string) ([]byte, error) { return os.ReadFile(path) }
