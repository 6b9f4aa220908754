package engine

import (
	"context"
	"time"

	"github.com/dlmhq/dlm"
)

// Observer learns what the engine does, for monitoring. Its methods are
// called synchronously on the lock path, so they must be quick and must
// never block; they may be called from many goroutines at once.
type Observer interface {
	// Changed is called once for every change this engine committed, after
	// the commit: c.Granted are the new leases (direct or handed over from
	// the queue), c.Ended the leases that ended, each with its Reason.
	// With a store shared by several processes it sees only this process's
	// commits. c must not be changed or kept.
	Changed(c *dlm.Change)
	// Waited is called when an acquire that queued stops waiting, with the
	// time since the acquire began and how the wait ended.
	Waited(d time.Duration, outcome WaitOutcome)
}

// WaitOutcome is how a queued acquire stopped waiting.
type WaitOutcome uint8

// Wait outcomes.
const (
	WaitGranted   WaitOutcome = 1 // its turn came: a handoff
	WaitTimedOut  WaitOutcome = 2 // the wait ran out (wait_timeout)
	WaitCancelled WaitOutcome = 3 // the caller left: its context ended
	WaitShutdown  WaitOutcome = 4 // the engine closed
)

// String returns the outcome as a metric label: granted, timeout, cancelled
// or shutdown.
func (o WaitOutcome) String() string {
	switch o {
	case WaitGranted:
		return "granted"
	case WaitTimedOut:
		return "timeout"
	case WaitCancelled:
		return "cancelled"
	case WaitShutdown:
		return "shutdown"
	}
	return "unknown"
}

// DefaultStatsMaxAge is how long Stats reuses a count by default: long
// enough that scrapes, however frequent, cost at most one count of every
// lease per period; short enough for a gauge.
const DefaultStatsMaxAge = 5 * time.Second

// statsCache keeps the last dlm.Stats read from the store.
type statsCache struct {
	// turn is a lock held while counting, so that concurrent callers
	// share one count; a channel, so that they can give up waiting.
	turn  chan struct{}
	at    time.Time // when stats was read; zero if never
	stats dlm.Stats
}

// Stats returns the leases live and the waiters queued in the store, by
// mode, across every tenant, as counted at most Options.StatsMaxAge ago.
// Callers that arrive while a count runs wait for it and share it. Errors:
// unavailable, or ctx's.
func (e *Engine) Stats(ctx context.Context) (dlm.Stats, error) {
	c := &e.stats
	select {
	case c.turn <- struct{}{}:
		defer func() { <-c.turn }()
	case <-ctx.Done():
		return dlm.Stats{}, context.Cause(ctx)
	}
	if !c.at.IsZero() && time.Since(c.at) < e.opts.StatsMaxAge {
		return c.stats, nil
	}
	var st dlm.Stats
	err := e.store.View(ctx, func(tx dlm.ReadTx) error {
		var err error
		st, err = tx.Stats(ctx)
		return err
	})
	if err != nil {
		return dlm.Stats{}, err
	}
	c.stats, c.at = st, time.Now()
	return st, nil
}

// Watchers returns how many watches are connected now.
func (e *Engine) Watchers() int {
	e.feed.mu.Lock()
	defer e.feed.mu.Unlock()
	return len(e.feed.watchers)
}
