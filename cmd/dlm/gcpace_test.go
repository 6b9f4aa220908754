package main

import "testing"

func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		name string
		live uint64
		want int
	}{
		{"no heap yet", 0, gcMaxPercent},
		{"tiny heap: bounded", 1 << 20, gcMaxPercent},
		{"small heap: the minimum headroom", 8 << 20, 200},
		{"headroom equals half the heap", 32 << 20, gcMinPercent},
		{"large heap: half of it", 1 << 30, gcMinPercent},
	} {
		if got := gcPercent(tc.live); got != tc.want {
			t.Errorf("%s: gcPercent(%d) = %d, want %d", tc.name, tc.live, got, tc.want)
		}
	}
}
