// Package engine runs lock operations on a dlm.Store: it validates requests,
// drives dlm.LockState inside store transactions, parks blocking acquires
// until they are granted, and sweeps expired leases on time.
//
// It is the one implementation of the lock service; the HTTP layer and tests
// call it, and every storage backend gets the same semantics through it.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/lograte"
)

// Options configure an Engine. The zero value of each field means its default.
type Options struct {
	// MaxTTL caps ttl_ms. Default 24h.
	MaxTTL time.Duration
	// MaxWait caps wait_ms. Default 5m.
	MaxWait time.Duration
	// MaxLeasesPerTenant caps the leases one tenant holds. Default 100,000.
	MaxLeasesPerTenant int64
	// MaxWaitersPerTenant caps the waiters one tenant has queued. Default 10,000.
	MaxWaitersPerTenant int64
	// EndedRetention is how long ended leases are remembered, so that their
	// IDs answer 410 rather than 404. Default 24h (at least 24h).
	EndedRetention time.Duration
	// WaitPoll, if set, makes a queued acquire also look for its grant this
	// often, for stores whose grants can be made by another process and
	// whose notifications might be missed. Default 0: rely on notification.
	WaitPoll time.Duration
	// EventRetention is how long events are kept. Default 168h.
	EventRetention time.Duration
	// EventRetentionCount caps how many events are kept: a log that grew
	// past it by a tenth is trimmed back within about a second (see
	// pruner). Default 1,000,000.
	EventRetentionCount int64
	// WatchBuffer is how many events a watcher may have waiting for it. A
	// burst beyond that is read again from the log once the watcher has
	// read its buffer; a watcher that falls as many events further behind
	// is dropped as too slow: a watcher may never slow the lock path down.
	// Default 4096.
	WatchBuffer int
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Observer, if set, learns of every committed change and every end of
	// a wait, for metrics. Default nil: none.
	Observer Observer
	// StatsMaxAge is how long Stats reuses a count. Default
	// DefaultStatsMaxAge.
	StatsMaxAge time.Duration
	// Clock times the sweep and parked acquires. Give the embedded store
	// the same one. Default dlm.SystemClock.
	Clock dlm.Clock
}

func (o *Options) setDefaults() {
	if o.MaxTTL == 0 {
		o.MaxTTL = 24 * time.Hour
	}
	if o.MaxWait == 0 {
		o.MaxWait = 5 * time.Minute
	}
	if o.MaxLeasesPerTenant == 0 {
		o.MaxLeasesPerTenant = 100_000
	}
	if o.MaxWaitersPerTenant == 0 {
		o.MaxWaitersPerTenant = 10_000
	}
	if o.EndedRetention == 0 {
		o.EndedRetention = 24 * time.Hour
	}
	if o.EventRetention == 0 {
		o.EventRetention = 168 * time.Hour
	}
	if o.EventRetentionCount == 0 {
		o.EventRetentionCount = 1_000_000
	}
	if o.WatchBuffer == 0 {
		o.WatchBuffer = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StatsMaxAge == 0 {
		o.StatsMaxAge = DefaultStatsMaxAge
	}
	if o.Clock == nil {
		o.Clock = dlm.SystemClock{}
	}
}

// Engine is the lock service over one Store. Its methods are safe for
// concurrent use. Every method that changes state returns only after the
// change is durable.
type Engine struct {
	store   dlm.Store
	floor   int64 // dlm.TokenFloor of when it started: see LockState.Floor
	opts    Options
	log     *slog.Logger
	group   grouper
	waiters hub
	sweeper sweeper
	pruner  pruner
	feed    feed
	keys    keyCache
	holds   keyHolds
	stats   statsCache
	logs    lograte.Limiter // repeated failures are logged once per interval
	// shared is true when other processes write to the store too, so grants
	// and events can come from elsewhere.
	shared bool

	closing chan struct{} // closed by Close
	mu      sync.Mutex    // guards closed and every wg.Add after New
	closed  bool
	wg      sync.WaitGroup // the background goroutines and parked acquires
}

// New returns an Engine on store and starts its sweeper. Call Close to stop
// it; Close leaves the store open.
func New(store dlm.Store, opts Options) *Engine {
	opts.setDefaults()
	e := &Engine{
		store:   store,
		opts:    opts,
		log:     opts.Logger,
		closing: make(chan struct{}),
	}
	_, e.shared = store.(dlm.Notifier)
	e.floor = dlm.TokenFloor(time.Now()) // the real clock: see LockState.Floor
	e.group.max = 1
	if c, ok := store.(dlm.ConcurrentBatches); ok {
		e.group.max = max(1, c.MaxBatches())
	}
	e.waiters.init()
	e.sweeper.init()
	e.pruner.init(e.opts.EventRetentionCount)
	e.feed.init(e.opts.WatchBuffer)
	e.feed.shared = e.shared
	e.stats.turn = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	e.wg.Add(4)
	go func() {
		defer e.wg.Done()
		<-e.closing
		cancel()
	}()
	go e.sweep(ctx)
	go e.prune(ctx)
	go e.runFeed(ctx)
	if e.shared {
		e.wg.Add(1)
		go e.refreshKeys(ctx)
	}
	return e
}

// Close stops the engine: parked acquires are answered with unavailable and
// leave the queue, the sweeper stops, and no new acquire may wait. Leases are
// kept. Close waits for all of that and is safe to call more than once.
func (e *Engine) Close() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.closing)
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// enter counts a request that may park, unless the engine is closing. The
// caller calls e.wg.Done when it returns.
func (e *Engine) enter() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.wg.Add(1)
	return true
}

// Ready reports whether the store answers.
func (e *Engine) Ready(ctx context.Context) error {
	return e.store.View(ctx, func(tx dlm.ReadTx) error {
		_, _, err := tx.APIKey(ctx, adminKeyID)
		return err
	})
}

// idEncoding keeps the byte order of IDs in their text, so IDs sort by time.
var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// newID returns a lease ID: 48 bits of milliseconds since the epoch, then
// 128 random bits, as 36 lowercase base32 characters. The random part makes
// the ID a capability nobody can guess; the time prefix makes IDs of new
// leases sort together, so the stores' indexes on them take appends rather
// than writes all over the tree.
func newID() string {
	var b [22]byte
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (40 - 8*i))
	}
	rand.Read(b[6:])
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// errShuttingDown answers requests that arrive or wait while Close runs.
var errShuttingDown = dlm.Errorf(dlm.CodeUnavailable, "server is shutting down")

// afterCommit tells the observer about c, hands grants to the acquires
// parked on them, tells the feed and the pruner about new events and makes
// sure the sweeper wakes for the earliest new expiry.
func (e *Engine) afterCommit(save dlm.Save) {
	c := save.Change
	if e.opts.Observer != nil {
		e.opts.Observer.Changed(c)
	}
	if len(c.Events) > 0 {
		if e.shared || !e.feed.publishNext(c.Events) {
			e.feed.poked()
		}
		e.pruner.committed(len(c.Events))
		if !e.shared {
			// Only this process writes: its listeners need no read of
			// the log (see feed.notify).
			e.feed.notifyLocal(c.Events)
		}
	}
	var due time.Time
	for i := range c.Granted {
		e.waiters.deliver(c.Granted[i])
		due = earliest(due, c.Granted[i].ExpiresAt)
	}
	for i := range c.Queued {
		due = earliest(due, c.Queued[i].Deadline)
	}
	if c.Delayed && !save.State.DelayUntil.IsZero() {
		due = earliest(due, save.State.DelayUntil)
	}
	if !due.IsZero() {
		e.sweeper.wakeBy(due)
	}
}

// now reads the engine's clock.
func (e *Engine) now() time.Time { return e.opts.Clock.Now() }

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
