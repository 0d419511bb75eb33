package main

import "testing"

// TestFirstGCAt: 160 MiB up to a 23 MB export (100k flows), 7 times the
// export's size above, 2 GiB at most.
func TestFirstGCAt(t *testing.T) {
	for _, c := range []struct {
		size int64
		want int
	}{
		{0, 160 << 20},
		{23 << 20, 161 << 20},
		{22 << 20, 160 << 20},
		{236_000_000, 1_652_000_000},
		{1 << 30, 2 << 30},
		{1 << 40, 2 << 30},
	} {
		if got := firstGCAt(c.size); got != c.want {
			t.Errorf("firstGCAt(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}
