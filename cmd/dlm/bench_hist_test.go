package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistIndex(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 1<<20 + 1, 123456789, 1 << 39, 1<<40 - 1} {
		i := histIndex(v)
		if i < prev {
			t.Errorf("histIndex(%d) = %d, below the previous %d", v, i, prev)
		}
		prev = i
		if got := histValue(i); math.Abs(float64(got)-float64(v)) > float64(v)/histSub {
			t.Errorf("histValue(histIndex(%d)) = %d: off by more than 1/%d", v, got, histSub)
		}
	}
	if i := histIndex(math.MaxUint64); i != histBuckets-1 {
		t.Errorf("histIndex(max) = %d, want the last bucket %d", i, histBuckets-1)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var a, b histogram
	var all []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100_000 {
		d := time.Duration(rng.ExpFloat64() * float64(time.Millisecond))
		all = append(all, d)
		if i%2 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(&b)
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := all[int(q*float64(len(all)))-1]
		if got := a.quantile(q); math.Abs(float64(got-want)) > float64(want)/50 {
			t.Errorf("quantile(%v) = %v, want %v within 2%%", q, got, want)
		}
	}
	if a.n != 100_000 || a.max != all[len(all)-1] || a.quantile(1) != a.max {
		t.Errorf("n %d, max %v, quantile(1) %v; want 100000 and %v", a.n, a.max, a.quantile(1), all[len(all)-1])
	}
	var empty histogram
	if empty.quantile(0.5) != 0 || empty.mean() != 0 {
		t.Error("an empty histogram reports values")
	}
}
