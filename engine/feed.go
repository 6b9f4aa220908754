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
	last     int64         // last event ID published
	watchers []*Watcher    // a slice, not a set: publish runs through it per event
	poke     chan struct{} // a local commit wrote events
	behind   int           // Options.WatchBuffer
	// stale, on a shared store, says that the feed stopped following the
	// log because nobody here needed it (no watcher, session or parked
	// acquire) and last is behind: reading every other instance's commits
	// for nobody cost each instance a read per commit of the cluster.
	// Whoever needs the feed again moves last to the log's end first
	// (resumeFeed, Watch).
	stale  bool
	shared bool // Engine.shared: listeners are told from the log
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
		if shared && len(e.feed.watchers) == 0 && len(e.feed.listeners) == 0 && e.waiters.empty() {
			e.feed.stale = true
		}
		since, active := e.feed.last, !e.feed.stale && (len(e.feed.watchers) > 0 || shared)
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

// resumeFeed makes a stale feed follow the log again from its end. A parked
// acquire calls it after subscribing and before it queues, a session when
// it opens: what they wait for is committed after that.
func (e *Engine) resumeFeed(ctx context.Context) error {
	e.feed.mu.Lock()
	stale := e.feed.stale
	e.feed.mu.Unlock()
	if !stale {
		return nil
	}
	var last int64
	err := e.store.View(ctx, func(tx dlm.ReadTx) error {
		var err error
		last, err = tx.LastEventID(ctx)
		return err
	})
	if err != nil {
		return err
	}
	e.feed.mu.Lock()
	if e.feed.stale {
		e.feed.last, e.feed.stale = max(e.feed.last, last), false
	}
	e.feed.mu.Unlock()
	return nil
}

// publishNext publishes the events of a commit made here, with the IDs the
// store gave them, if they follow the last event published without a gap,
// and reports whether it did: then the feed need not read them back from
// the log. Events that come out of order (commits finishing in another
// order than their IDs) are left to the log.
func (f *feed) publishNext(events []dlm.Event) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.watchers) == 0 {
		return false // the feed does not follow the log: see Watch
	}
	for i := range events {
		if events[i].ID != f.last+1+int64(i) {
			return false
		}
	}
	f.publishLocked(events)
	return true
}

// publish hands events, in ID order, to every watcher whose filter they pass.
func (f *feed) publish(events []dlm.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishLocked(events)
}

func (f *feed) publishLocked(events []dlm.Event) {
	for i := range events {
		ev := &events[i] // one copy for every watcher it is sent to
		if ev.ID <= f.last {
			continue // published by an earlier read
		}
		f.last = ev.ID
		if f.shared {
			f.notify(ev)
		}
		for j := 0; j < len(f.watchers); j++ {
			w := f.watchers[j]
			if ev.ID <= w.upto || !w.filter.Match(ev) {
				continue
			}
			if w.lagging {
				// It will read this one from the log, unless it has
				// fallen too far behind.
				if w.missed++; w.missed > f.behind {
					f.drop(w, ErrSlowConsumer)
					j-- // the last watcher took its place
				}
				continue
			}
			select {
			case w.live <- ev:
				if len(w.live) == cap(w.live)/2 {
					select {
					case w.filling <- struct{}{}:
					default:
					}
				}
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

// add starts publishing to w.
func (f *feed) add(w *Watcher) {
	w.slot = len(f.watchers)
	f.watchers = append(f.watchers, w)
}

// remove stops publishing to w, if it was published to.
func (f *feed) remove(w *Watcher) {
	if w.slot < 0 {
		return
	}
	last := f.watchers[len(f.watchers)-1]
	f.watchers[w.slot], last.slot = last, w.slot
	f.watchers[len(f.watchers)-1] = nil
	f.watchers = f.watchers[:len(f.watchers)-1]
	w.slot = -1
}

func (f *feed) drop(w *Watcher, err error) {
	f.remove(w)
	w.stop(err)
}

func (f *feed) closeAll(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.watchers) > 0 {
		f.drop(f.watchers[len(f.watchers)-1], err)
	}
	f.closeListeners(err)
}
