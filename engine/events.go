package engine

import (
	"context"
	"sync"

	"github.com/dlmhq/dlm"
)

// Watch errors: why a watch ended.
var (
	// ErrSlowConsumer ends a watch that fell too far behind: its buffer of
	// Options.WatchBuffer events full, and as many more not sent since.
	ErrSlowConsumer = dlm.Errorf(dlm.CodeSlowConsumer, "fell too far behind the event log")
	// ErrCompacted refuses a watch whose since is older than the retained log.
	ErrCompacted = dlm.Errorf(dlm.CodeCompacted, "events after since were pruned")
)

// Listing limits for event history.
const (
	DefaultEventLimit = 100
	MaxEventLimit     = 1000
)

// EventQuery selects events for history and watch.
type EventQuery struct {
	Tenant string // the caller's tenant: it sees its namespace and the global one
	Scope  string // "", "tenant" or "global": which of the two; "" is both
	Name   string // exact lock name, or ""
	Prefix string // lock name prefix, or ""
	Since  int64  // exclusive
	Limit  int    // history only; 0 is DefaultEventLimit
}

func (q EventQuery) filter() (dlm.EventFilter, error) {
	f := dlm.EventFilter{Name: q.Name, Prefix: q.Prefix, Since: q.Since}
	if q.Name != "" {
		if err := dlm.ValidateName(q.Name); err != nil {
			return f, err
		}
	}
	if err := dlm.ValidatePrefix(q.Prefix); err != nil {
		return f, err
	}
	if q.Since < 0 {
		return f, dlm.Invalid("since", "must not be negative")
	}
	switch q.Scope {
	case "":
		f.Namespaces = []string{q.Tenant, dlm.GlobalNamespace}
	case "tenant":
		f.Namespaces = []string{q.Tenant}
	case "global":
		f.Namespaces = []string{dlm.GlobalNamespace}
	default:
		return f, dlm.Invalid("scope", "must be tenant or global")
	}
	if q.Tenant == "" {
		return f, dlm.Errorf(dlm.CodePermissionDenied, "events belong to tenants: use a tenant key")
	}
	return f, nil
}

// Events returns the history after q.Since, oldest first, and the since to
// pass for the next page: the last event's ID, or with no event q.Since,
// lowered to the log's last ID if it is beyond it.
func (e *Engine) Events(ctx context.Context, q EventQuery) (events []dlm.Event, next int64, err error) {
	f, err := q.filter()
	if err != nil {
		return nil, 0, err
	}
	f.Limit = q.Limit
	if f.Limit == 0 {
		f.Limit = DefaultEventLimit
	}
	if f.Limit < 0 || f.Limit > MaxEventLimit {
		return nil, 0, dlm.Invalid("limit", "must be between 1 and %d", MaxEventLimit)
	}
	next = q.Since
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		if events, err = tx.Events(ctx, f); err != nil || len(events) > 0 {
			return err
		}
		// A since beyond the end of the log learns where the log ends,
		// so that a client can start from there (a watch that must not
		// miss what happens while it connects).
		last, err := tx.LastEventID(ctx)
		next = min(next, last)
		return err
	})
	if len(events) > 0 {
		next = events[len(events)-1].ID
	}
	return events, next, err
}

// Watcher is one subscription to the event log: first the events after its
// since (the backlog), then live events, in ID order, with no gap and no
// duplicate at the seam.
type Watcher struct {
	e      *Engine
	filter dlm.EventFilter
	sent   int64 // the last event ID handed out
	upto   int64 // the backlog ends here; live events come after it
	slot   int   // index in the feed's watchers, -1 once removed; the feed's lock guards it

	backlogDone bool
	pending     []dlm.Event

	live chan *dlm.Event // shared by every watcher it is sent to: read only
	// lagging is set by the feed when live was full; missed counts the
	// events it has not sent since. Both are guarded by the feed's lock.
	lagging bool
	missed  int
	lag     chan struct{} // signalled when lagging is set
	filling chan struct{} // signalled when live is half full
	done    chan struct{}
	once    sync.Once
	err     error
}

// Watch subscribes to events matching q. With fromStart false, q.Since is
// ignored and only events committed from now on are delivered. Errors:
// invalid_argument, and ErrCompacted when q.Since is older than the log.
func (e *Engine) Watch(ctx context.Context, q EventQuery, fromStart bool) (*Watcher, error) {
	f, err := q.filter()
	if err != nil {
		return nil, err
	}
	var first, last int64
	err = e.store.View(ctx, func(tx dlm.ReadTx) error {
		if first, err = tx.FirstEventID(ctx); err != nil {
			return err
		}
		last, err = tx.LastEventID(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if fromStart && first > 0 && q.Since+1 < first {
		return nil, ErrCompacted
	}
	w := &Watcher{e: e, filter: f, live: make(chan *dlm.Event, e.opts.WatchBuffer), lag: make(chan struct{}, 1), filling: make(chan struct{}, 1), done: make(chan struct{})}
	e.feed.mu.Lock()
	defer e.feed.mu.Unlock()
	if e.feed.stale || e.feed.last < last && len(e.feed.watchers) == 0 && !e.shared {
		// Nobody watched, so the feed did not follow the log: the backlog
		// read covers what it skipped.
		e.feed.last, e.feed.stale = max(e.feed.last, last), false
	}
	select {
	case <-e.closing:
		return nil, errShuttingDown
	default:
	}
	w.upto = e.feed.last
	w.sent = q.Since
	if !fromStart {
		// On a shared store the feed may not have read up to last yet:
		// what it publishes up to there is from before the watch began.
		w.sent = max(w.upto, last)
	}
	e.feed.add(w)
	return w, nil
}

// Next returns the next event, blocking until there is one, ctx ends or the
// watch is dropped (ErrSlowConsumer, or unavailable on shutdown).
func (w *Watcher) Next(ctx context.Context) (dlm.Event, error) {
	for {
		if len(w.pending) > 0 {
			ev := w.pending[0]
			w.pending = w.pending[1:]
			w.sent = ev.ID
			return ev, nil
		}
		if !w.backlogDone {
			if err := w.readBacklog(ctx); err != nil {
				return dlm.Event{}, err
			}
			continue
		}
		select {
		case ev := <-w.live:
			if ev.ID > w.sent {
				w.sent = ev.ID
				return *ev, nil
			}
		case <-w.lag:
			w.rejoin()
		case <-w.done:
			return dlm.Event{}, w.err
		case <-ctx.Done():
			return dlm.Event{}, context.Cause(ctx)
		}
	}
}

// More appends to batch the events that are there now, without waiting for
// new ones, until batch holds max; it may read backlog from the log. It
// returns batch, and with it the error that ended the watch, if it ended.
// Watchers call it after Next, to send a burst in one write.
func (w *Watcher) More(ctx context.Context, batch []dlm.Event, max int) ([]dlm.Event, error) {
	for len(batch) < max {
		if len(w.pending) > 0 {
			ev := w.pending[0]
			w.pending = w.pending[1:]
			w.sent = ev.ID
			batch = append(batch, ev)
			continue
		}
		if !w.backlogDone {
			if err := w.readBacklog(ctx); err != nil {
				return batch, err
			}
			continue
		}
		select {
		case ev := <-w.live:
			if ev.ID > w.sent {
				w.sent = ev.ID
				batch = append(batch, *ev)
			}
		case <-w.lag:
			w.rejoin()
		case <-w.done:
			return batch, w.err
		default:
			return batch, nil
		}
	}
	return batch, nil
}

// rejoin lets a watcher whose buffer overflowed in a burst catch up: what
// it had not read yet, in the buffer or not, becomes backlog to read from
// the log, and live events after that come through the buffer again.
func (w *Watcher) rejoin() {
	f := &w.e.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if !w.lagging {
		return
	}
	for len(w.live) > 0 {
		<-w.live // at most f.last: the backlog has them
	}
	w.lagging, w.missed = false, 0
	w.upto, w.backlogDone = f.last, false
}

// readBacklog reads the next page of stored events up to w.upto.
func (w *Watcher) readBacklog(ctx context.Context) error {
	if w.sent >= w.upto {
		w.backlogDone = true
		return nil
	}
	f := w.filter
	f.Since, f.Limit = w.sent, feedPage
	var page []dlm.Event
	err := w.e.store.View(ctx, func(tx dlm.ReadTx) error {
		var err error
		page, err = tx.Events(ctx, f)
		return err
	})
	if err != nil {
		return err
	}
	if len(page) < feedPage {
		w.backlogDone = true
	}
	for i, ev := range page {
		if ev.ID > w.upto {
			page, w.backlogDone = page[:i], true
			break
		}
	}
	w.pending = page
	return nil
}

// Filling is signalled when half of the watcher's buffer (WatchBuffer) is
// taken: a watcher that reads in batches, sleeping in between, should read
// now, or it will have to catch up from the log.
func (w *Watcher) Filling() <-chan struct{} { return w.filling }

// Done is closed when the watch ends: closed, or dropped by the engine.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Close ends the watch.
func (w *Watcher) Close() {
	w.e.feed.mu.Lock()
	defer w.e.feed.mu.Unlock()
	w.e.feed.remove(w)
	w.stop(nil)
}

// stop ends the watch with err; the feed holds its lock.
func (w *Watcher) stop(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.done)
	})
}
