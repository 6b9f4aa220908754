package dlmtest

import (
	"sync"
	"time"

	"github.com/dlmhq/dlm"
)

// ManualClock is a dlm.Clock that moves only when a test advances it, so
// that expiry and waits are driven by the test instead of by real TTLs. Its
// timers fire during Advance, in deadline order.
type ManualClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*manualTimer
	changed chan struct{} // closed and replaced when timers are added or removed
}

// NewManualClock returns a clock that reads start until advanced.
func NewManualClock(start time.Time) *ManualClock {
	return &ManualClock{now: start, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and fires every timer that is due.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		select {
		case t.c <- c.now:
		default:
		}
	}
	clear(c.timers[len(kept):])
	c.timers = kept
	c.signal()
}

// Timers returns how many timers are set and not yet fired or stopped.
func (c *ManualClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitTimers blocks until at least n timers are set, or done is closed (it
// then returns false): the signal that whatever a test drives has gone to
// sleep on the clock, so that advancing it will wake it.
func (c *ManualClock) WaitTimers(n int, done <-chan struct{}) bool {
	for {
		c.mu.Lock()
		got, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-changed:
		case <-done:
			return false
		}
	}
}

func (c *ManualClock) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// NewTimer returns a timer that fires once the clock has advanced by d.
func (c *ManualClock) NewTimer(d time.Duration) dlm.Timer {
	t := &manualTimer{clock: c, c: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

type manualTimer struct {
	clock *ManualClock
	c     chan time.Time
	at    time.Time
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

// Stop removes the timer and drains its channel, as time.Timer does since
// Go 1.23.
func (t *manualTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	return t.stopLocked()
}

func (t *manualTimer) stopLocked() bool {
	select {
	case <-t.c:
	default:
	}
	for i, o := range t.clock.timers {
		if o == t {
			t.clock.timers = append(t.clock.timers[:i], t.clock.timers[i+1:]...)
			t.clock.signal()
			return true
		}
	}
	return false
}

// Reset sets the timer to fire d from the clock's now; a d of zero or less
// fires it at once.
func (t *manualTimer) Reset(d time.Duration) bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	active := t.stopLocked()
	t.at = c.now.Add(d)
	if d <= 0 {
		t.c <- c.now
		return active
	}
	c.timers = append(c.timers, t)
	c.signal()
	return active
}
