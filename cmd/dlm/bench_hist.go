package main

import (
	"math/bits"
	"time"
)

// histogram records durations in log-linear buckets, as HdrHistogram does:
// values below 2·histSub nanoseconds are exact, and every power of two above
// is split into histSub equal buckets, so a value is known to within 1/histSub
// (0.8%) of itself. Recording is a few instructions and no allocation; a
// histogram is ~35 KB and covers 0 to 2^histMaxExp ns (18 minutes), clamping
// larger values. It is not safe for concurrent use: each bench worker keeps
// its own, and merges them at the end.
type histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum, max time.Duration
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // buckets per power of two
	histMaxExp  = 40               // 2^40 ns ≈ 18 min
	histBuckets = (histMaxExp - histSubBits + 1) * histSub
)

// histIndex is the bucket of v nanoseconds.
func histIndex(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	e := bits.Len64(v) - (histSubBits + 1) // v>>e is in [histSub, 2·histSub)
	i := (e+1)*histSub + int(v>>e) - histSub
	return min(i, histBuckets-1)
}

// histValue is a representative value of bucket i: its midpoint.
func histValue(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	lo := uint64(i%histSub+histSub) << e
	return lo + (uint64(1)<<e)/2
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 ≤ q ≤ 1) of the recorded values, never
// more than the largest one; 0 if there are none.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(histValue(i)), h.max)
		}
	}
	return h.max
}

func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}
