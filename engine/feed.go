package engine

import (
	"context"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
)

// feed tails the store's event log in ID order and fans it out to watchers.
// On a store shared with other processes it also wakes the acquires parked
// here whose grant another process made. The log is the source of truth, so
// a missed wake-up only delays delivery until the next read.
type feed struct {
	mu       sync.Mutex
	last     int64 // last event ID published
	watchers map[*Watcher]struct{}
	poke     chan struct{} // a local commit wrote events
	behind   int           // Options.WatchBuffer
	shared   bool          // Engine.shared: listeners are told from the log
	// listeners are the Listeners, byKey those that follow each lock.
	listeners map[*Listener]struct{}
	byKey     map[dlm.Key]map[*Listener]struct{}
}

// Feed tuning.
const (
	// feedPage is how many events one read of the log takes.
	feedPage = 512
	// feedPoll is how often the feed reads the log without being poked, so
	// that a lost notification from another process delays by at most this.
	feedPoll = time.Second
)

func (f *feed) init(behind int) {
	f.behind = behind
	f.watchers = map[*Watcher]struct{}{}
	f.poke = make(chan struct{}, 1)
	f.listeners = map[*Listener]struct{}{}
	f.byKey = map[dlm.Key]map[*Listener]struct{}{}
}

// poked tells the feed that new events were committed here.
func (f *feed) poked() {
	select {
	case f.poke <- struct{}{}:
	default:
	}
}

// run reads the log whenever it may have grown, until the engine closes.
func (e *Engine) runFeed(ctx context.Context) {
	defer e.wg.Done()
	var changes <-chan struct{}
	if n, ok := e.store.(dlm.Notifier); ok {
		changes = n.Changes()
	}
	tick := time.NewTicker(feedPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			e.feed.closeAll(errShuttingDown)
			return
		case <-e.feed.poke:
		case <-changes:
		case <-tick.C:
		}
		if err := e.readFeed(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("reading the event log failed", "err", err)
		}
	}
}

// readFeed publishes every event after the last one published.
func (e *Engine) readFeed(ctx context.Context) error {
	shared := e.shared
	for {
		e.feed.mu.Lock()
		since, active := e.feed.last, len(e.feed.watchers) > 0 || shared
		e.feed.mu.Unlock()
		if !active {
			return nil
		}
		var events []dlm.Event
		err := e.store.View(ctx, func(tx dlm.ReadTx) error {
			var err error
			events, err = tx.Events(ctx, dlm.EventFilter{Since: since, Limit: feedPage})
			return err
		})
		if err != nil {
			return err
		}
		e.feed.publish(events)
		if shared {
			for i := range events {
				if ev := &events[i]; ev.Type == dlm.EventAcquired {
					e.waiters.check(ev.Key, ev.HolderID, ev.Mode)
				}
			}
		}
		if len(events) < feedPage {
			return nil
		}
	}
}

// publish hands events, in ID order, to every watcher whose filter they pass.
func (f *feed) publish(events []dlm.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range events {
		if ev.ID <= f.last {
			continue // published by an earlier read
		}
		f.last = ev.ID
		if f.shared {
			f.notify(&ev)
		}
		for w := range f.watchers {
			if ev.ID <= w.upto || !w.filter.Match(&ev) {
				continue
			}
			if w.lagging {
				// It will read this one from the log, unless it has
				// fallen too far behind.
				if w.missed++; w.missed > f.behind {
					f.drop(w, ErrSlowConsumer)
				}
				continue
			}
			select {
			case w.live <- ev:
			default:
				// A burst filled its buffer: it goes on from the log
				// once it has read the buffer (Watcher.rejoin).
				w.lagging, w.missed = true, 1
				select {
				case w.lag <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (f *feed) drop(w *Watcher, err error) {
	delete(f.watchers, w)
	w.stop(err)
}

func (f *feed) closeAll(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.watchers {
		f.drop(w, err)
	}
	f.closeListeners(err)
}
