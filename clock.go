package dlm

import "time"

// Clock is where the engine and the embedded store read the time and set
// their timers, so that tests can drive expiry with a manual clock
// (dlmtest.ManualClock) instead of waiting for real TTLs.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends on its channel once d has
	// passed on this clock.
	NewTimer(d time.Duration) Timer
}

// Timer is a Clock's time.Timer.
type Timer interface {
	C() <-chan time.Time
	// Stop and Reset behave as time.Timer's do (Go 1.23 and later: no
	// stale value is received after either returns).
	Stop() bool
	Reset(d time.Duration) bool
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer returns a real timer.
func (SystemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time        { return t.t.C }
func (t systemTimer) Stop() bool                 { return t.t.Stop() }
func (t systemTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }
