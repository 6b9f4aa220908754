package lograte_test

import (
	"testing"
	"time"

	"github.com/dlmhq/dlm/lograte"
)

func TestLimiter(t *testing.T) {
	l := lograte.Limiter{Every: time.Second}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		msg      string
		at       time.Duration
		ok       bool
		wantHeld int
	}{
		{"a", 0, true, 0},
		{"a", 100 * time.Millisecond, false, 0},
		{"b", 200 * time.Millisecond, true, 0}, // another message has its own interval
		{"a", 900 * time.Millisecond, false, 0},
		{"a", time.Second, true, 2}, // the two held back are counted
		{"a", 1500 * time.Millisecond, false, 0},
		{"a", 5 * time.Second, true, 1},
	}
	for i, s := range steps {
		held, ok := l.Allow(s.msg, t0.Add(s.at))
		if ok != s.ok || held != s.wantHeld {
			t.Errorf("step %d (%s at %v): Allow = %d, %v; want %d, %v", i, s.msg, s.at, held, ok, s.wantHeld, s.ok)
		}
	}
}
