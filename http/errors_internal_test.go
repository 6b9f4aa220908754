package dlmhttp

import (
	"testing"
	"time"
)

// TestLogLimit: one line per causeLogEvery, and the next line that gets
// through says how many were left out.
func TestLogLimit(t *testing.T) {
	var l logLimit
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at       time.Duration
		wantLeft int
		wantOK   bool
	}{
		{0, 0, true},
		{causeLogEvery / 2, 0, false},
		{causeLogEvery - 1, 0, false},
		{causeLogEvery, 2, true},
		{causeLogEvery + 1, 0, false},
		{3 * causeLogEvery, 1, true},
	}
	for _, s := range steps {
		if left, ok := l.allow(t0.Add(s.at)); left != s.wantLeft || ok != s.wantOK {
			t.Errorf("at +%v: allow = %d, %v; want %d, %v", s.at, left, ok, s.wantLeft, s.wantOK)
		}
	}
}
