package main

import "testing"

// TestMemoReadGCAt: 32 MiB up to an 8 MiB memo, 4 times the memo's size
// above (a 100k-flow memo, 16.6 MB: 66 MB), 2 GiB at most.
func TestMemoReadGCAt(t *testing.T) {
	for _, c := range []struct {
		size int64
		want int
	}{
		{0, 32 << 20},
		{8 << 20, 32 << 20},
		{16_610_185, 66_440_740},
		{166_000_000, 664_000_000},
		{1 << 30, 2 << 30},
		{1 << 40, 2 << 30},
	} {
		if got := memoReadGCAt(c.size); got != c.want {
			t.Errorf("memoReadGCAt(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}
