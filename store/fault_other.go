//go:build !unix

package store

import "os"

func unlockFile(*os.File) {}

// mapReadOnly maps nothing here: the caller reads f.
func mapReadOnly(f *os.File, size int64) ([]byte, func()) { return nil, func() {} }

func dropMapped([]byte) {}
