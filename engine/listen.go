package engine

import (
	"context"
	"sync"

	"github.com/dlmhq/dlm"
)

// Listener receives the events of the locks it follows that end a lease or
// queue a waiter, from every instance on a shared store: what a session
// needs to push lease ends and waiters to its client. Grants and renewals
// are left out: a session learns of its own from their answers, and a wake
// for each would cost every acquire. Unlike a Watcher it has no backlog and
// follows names one by one, so the feed hands each event only to the
// listeners of its lock.
type Listener struct {
	e    *Engine
	ch   chan dlm.Event
	keys map[dlm.Key]int // guarded by the feed's lock; a count per Follow
	done chan struct{}
	once sync.Once
	err  error
}

// Listen returns a Listener that follows no lock yet. Events committed after
// a Follow returns are delivered, in commit order per lock on a shared
// store and in the order their commits returned otherwise; a listener that falls Options.WatchBuffer
// events behind is dropped (ErrSlowConsumer), never slowing the lock path.
func (e *Engine) Listen(ctx context.Context) (*Listener, error) {
	l := &Listener{e: e, ch: make(chan dlm.Event, e.opts.WatchBuffer), keys: map[dlm.Key]int{}, done: make(chan struct{})}
	f := &e.feed
	f.mu.Lock()
	select {
	case <-e.closing:
		f.mu.Unlock()
		return nil, errShuttingDown
	default:
	}
	f.listeners[l] = struct{}{}
	f.mu.Unlock()
	if err := e.resumeFeed(ctx); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Follow starts delivering the events of key. Calls nest: each Follow needs
// one Unfollow.
func (l *Listener) Follow(key dlm.Key) {
	f := &l.e.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.keys[key]++; l.keys[key] == 1 {
		if f.byKey[key] == nil {
			f.byKey[key] = map[*Listener]struct{}{}
		}
		f.byKey[key][l] = struct{}{}
	}
}

// Unfollow undoes one Follow of key.
func (l *Listener) Unfollow(key dlm.Key) {
	f := &l.e.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.keys[key]--; l.keys[key] <= 0 {
		delete(l.keys, key)
		l.leave(key)
	}
}

// leave removes l from the listeners of key; the feed holds its lock.
func (l *Listener) leave(key dlm.Key) {
	f := &l.e.feed
	delete(f.byKey[key], l)
	if len(f.byKey[key]) == 0 {
		delete(f.byKey, key)
	}
}

// Events delivers the events of the followed locks in ID order.
func (l *Listener) Events() <-chan dlm.Event { return l.ch }

// Done is closed when the listener is closed or dropped; Err then says why.
func (l *Listener) Done() <-chan struct{} { return l.done }

// Err is why the listener was dropped: ErrSlowConsumer, unavailable on
// shutdown, or nil if it was closed.
func (l *Listener) Err() error {
	<-l.done
	return l.err
}

// Close stops the listener. It is safe to call more than once.
func (l *Listener) Close() {
	f := &l.e.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	l.stop(nil)
}

// stop ends l with err; the feed holds its lock.
func (l *Listener) stop(err error) {
	l.once.Do(func() {
		for key := range l.keys {
			l.leave(key)
		}
		l.keys = nil
		delete(l.e.feed.listeners, l)
		l.err = err
		close(l.done)
	})
}

// notifyLocal hands the events of a local commit to the listeners: on a
// store no other process writes, that is every event, and listeners are
// told without reading the log back.
func (f *feed) notifyLocal(events []dlm.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.byKey) == 0 {
		return
	}
	for i := range events {
		f.notify(&events[i])
	}
}

// notify hands ev to the listeners of its lock; the feed holds its lock.
// On a shared store the feed calls it for every event it reads from the
// log, which has those of every instance; otherwise afterCommit does.
func (f *feed) notify(ev *dlm.Event) {
	if ev.Type == dlm.EventAcquired || ev.Type == dlm.EventRenewed {
		return
	}
	for l := range f.byKey[ev.Key] {
		select {
		case l.ch <- *ev:
		default:
			l.stop(ErrSlowConsumer)
		}
	}
}

// closeListeners drops every listener; the feed holds its lock.
func (f *feed) closeListeners(err error) {
	for l := range f.listeners {
		l.stop(err)
	}
}
