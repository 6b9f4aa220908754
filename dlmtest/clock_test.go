package dlmtest

import (
	"testing"
	"time"
)

func TestManualClockFiresDueTimersOnly(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewManualClock(start)
	soon, late := c.NewTimer(time.Second), c.NewTimer(time.Minute)
	if !c.WaitTimers(2, nil) || c.Timers() != 2 {
		t.Fatalf("timers = %d; want 2", c.Timers())
	}
	c.Advance(999 * time.Millisecond)
	select {
	case <-soon.C():
		t.Fatal("a 1 s timer fired after 999 ms")
	default:
	}
	c.Advance(time.Millisecond)
	if got := <-soon.C(); !got.Equal(start.Add(time.Second)) {
		t.Errorf("fired at %v; want %v", got, start.Add(time.Second))
	}
	if !late.Stop() {
		t.Error("Stop of a pending timer = false")
	}
	c.Advance(time.Hour)
	select {
	case <-late.C():
		t.Error("a stopped timer fired")
	default:
	}
	if c.Timers() != 0 {
		t.Errorf("timers = %d after all fired or stopped", c.Timers())
	}
}

func TestManualClockResetDropsStaleValue(t *testing.T) {
	c := NewManualClock(time.Unix(0, 0))
	tm := c.NewTimer(time.Second)
	c.Advance(time.Second) // fired, value not read
	tm.Reset(time.Second)
	select {
	case <-tm.C():
		t.Fatal("received the value of the firing before Reset")
	default:
	}
	c.Advance(time.Second)
	<-tm.C()
	zero := c.NewTimer(0)
	<-zero.C() // a timer of 0 fires at once
}

func TestManualClockWaitTimersReturnsWhenDone(t *testing.T) {
	c := NewManualClock(time.Unix(0, 0))
	done := make(chan struct{})
	close(done)
	if c.WaitTimers(1, done) {
		t.Error("WaitTimers with no timer and done closed = true")
	}
}
