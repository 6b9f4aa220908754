package engine

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/dlmhq/dlm"
)

// sweeper is the schedule of the expiry sweep: it sleeps until the next
// lease expiry or waiter deadline the store knows of, and is woken early when
// a commit makes something due sooner.
type sweeper struct {
	target atomic.Int64 // unix nanos the sweep sleeps until
	kick   chan struct{}
}

func (s *sweeper) init() {
	s.kick = make(chan struct{}, 1)
	s.target.Store(maxTime)
}

const maxTime = int64(^uint64(0) >> 1)

// wakeBy makes the sweep run no later than t.
func (s *sweeper) wakeBy(t time.Time) {
	if t.UnixNano() < s.target.Load() {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Sweep tuning.
const (
	// sweepBatch is how many locks one sweep transaction expires: enough to
	// clear a burst in few commits, small enough to keep commits short.
	sweepBatch = 256
	// sweepIdle is the longest the sweep sleeps when nothing is due, so that
	// expiries made by other processes sharing the store are caught too.
	sweepIdle = time.Second
	// retryPause is the wait after a failed sweep, e.g. storage down.
	retryPause = 100 * time.Millisecond
)

// sweep ends expired leases and drops waiters past their deadline on time,
// granting the waiters behind them, even when no client touches the lock.
func (e *Engine) sweep(ctx context.Context) {
	defer e.wg.Done()
	timer := e.opts.Clock.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		case <-e.sweeper.kick:
			timer.Stop()
		}
		// While this sweep runs, any new expiry must wake the next one: the
		// sweep may read the store before that expiry is committed. (Every
		// time is before maxTime; none is before 0, which lost such wakes
		// and left an expiry up to sweepIdle late.)
		e.sweeper.target.Store(maxTime)
		wait, err := e.sweepOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if held, ok := e.logs.Allow("expiry sweep failed", time.Now()); ok {
				e.log.Warn("expiry sweep failed", "err", err, "held_back", held)
			}
			wait = retryPause
		}
		wait = min(wait, sweepIdle)
		e.sweeper.target.Store(e.now().Add(wait).UnixNano())
		timer.Reset(wait)
	}
}

// sweepOnce expires everything due and returns how long until the next thing
// is due, measured on the store's clock.
func (e *Engine) sweepOnce(ctx context.Context) (time.Duration, error) {
	for {
		var keys []dlm.Key
		err := e.store.View(ctx, func(tx dlm.ReadTx) error {
			var err error
			keys, err = tx.DueLocks(ctx, sweepBatch)
			return err
		})
		if err == nil && len(keys) > 0 {
			err = e.write(ctx, dlm.Need{Keys: keys}, func(v *view) error {
				for _, k := range keys {
					s := v.lock(k)
					c := new(dlm.Change)
					s.Expire(v.now, c)
					v.save(s, c)
				}
				return nil
			})
		}
		if err != nil {
			return 0, err
		}
		if len(keys) < sweepBatch {
			break
		}
	}
	var wait time.Duration
	err := e.store.View(ctx, func(tx dlm.ReadTx) error {
		next, err := tx.NextDue(ctx)
		if err != nil {
			return err
		}
		wait = sweepIdle
		if !next.IsZero() {
			// At least a millisecond, so that a store clock a little behind
			// ours cannot make this spin.
			wait = max(next.Sub(tx.Now()), time.Millisecond)
		}
		return nil
	})
	return wait, err
}
