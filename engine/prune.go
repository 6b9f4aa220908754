package engine

import (
	"context"
	"sync/atomic"
	"time"
)

// Pruning tuning.
const (
	// pruneEvery is how often ended leases and events past retention are
	// forgotten when nothing asks for it sooner.
	pruneEvery = time.Minute
	// pruneSpacing is the least time between two passes, so that a busy
	// server trims its event log in batches rather than after each commit.
	pruneSpacing = time.Second
	// pruneBatch is how many events one pruning transaction deletes at
	// most, so that pruning a large backlog never stalls the lock path for
	// long.
	pruneBatch = 5000
)

// pruner schedules the pruning passes. Besides the full pass every
// pruneEvery, it asks for a pass over the event log as soon as this engine
// has committed enough events since the last pass to take the log past
// Options.EventRetentionCount by a tenth of it: the log is then trimmed
// back within seconds, on its own goroutine, never on the lock path.
type pruner struct {
	margin int64
	since  atomic.Int64 // events committed here since the last pass began
	kick   chan struct{}
}

func (p *pruner) init(count int64) {
	p.margin = max(count/10, 1)
	p.kick = make(chan struct{}, 1)
}

// committed counts n events just committed and asks for a pass once they
// reach the margin.
func (p *pruner) committed(n int) {
	if p.since.Add(int64(n)) >= p.margin {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// prune runs a full pass now and every pruneEvery, and a pass over the
// event log alone whenever the pruner asks, at most every pruneSpacing,
// until ctx ends.
func (e *Engine) prune(ctx context.Context) {
	defer e.wg.Done()
	every := time.NewTicker(pruneEvery)
	defer every.Stop()
	spacing := time.NewTimer(0)
	defer spacing.Stop()
	for full := true; ; {
		e.pruner.since.Store(0)
		err := e.pruneEvents(ctx)
		if full && err == nil {
			err = e.pruneEnded(ctx)
		}
		if err != nil && ctx.Err() == nil {
			if held, ok := e.logs.Allow("pruning failed", time.Now()); ok {
				e.log.Warn("pruning failed", "err", err, "held_back", held)
			}
		}
		spacing.Reset(pruneSpacing)
		select {
		case <-ctx.Done():
			return
		case <-spacing.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-every.C:
			full = true
		case <-e.pruner.kick:
			full = false
		}
	}
}

// Prune forgets ended leases and events past their retention now. The engine
// also does it by itself: see pruner.
func (e *Engine) Prune(ctx context.Context) error {
	if err := e.pruneEvents(ctx); err != nil {
		return err
	}
	return e.pruneEnded(ctx)
}

// pruneEvents deletes the events past retention, pruneBatch at a time.
func (e *Engine) pruneEvents(ctx context.Context) error {
	before := e.now().Add(-e.opts.EventRetention)
	for {
		n, err := e.store.PruneEvents(ctx, before, e.opts.EventRetentionCount, pruneBatch)
		if err != nil || n < pruneBatch {
			return err
		}
	}
}

// pruneEnded forgets the ended leases past Options.EndedRetention,
// pruneBatch at a time.
func (e *Engine) pruneEnded(ctx context.Context) error {
	before := e.now().Add(-e.opts.EndedRetention)
	for {
		n, err := e.store.PruneEnded(ctx, before, pruneBatch)
		if err != nil || n < pruneBatch {
			return err
		}
	}
}
