package main

import "testing"

func TestBenchFormat(t *testing.T) {
	for v, want := range map[float64]string{0.0421: "42µs", 1.234: "1.23ms", 12.34: "12.3ms", 123.4: "123ms", 1165: "1.17s", 12345: "12.3s"} {
		if got := fmtMs(v); got != want {
			t.Errorf("fmtMs(%v) = %q, want %q", v, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", -1234567: "-1,234,567", 100000: "100,000"} {
		if got := commas(n); got != want {
			t.Errorf("commas(%d) = %q, want %q", n, got, want)
		}
	}
}
