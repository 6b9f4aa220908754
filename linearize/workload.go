package linearize

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlmhq/dlm"
)

// Target is a lock service as one client sees it: Do performs one operation
// and reports the answer. A transport failure, a 5xx or unavailable is an
// Output with Unknown set, since the operation may have happened anyway.
type Target interface {
	Do(ctx context.Context, in Input) Output
}

// Workload is a randomised run of concurrent clients, each acquiring locks
// (trying or waiting, exclusive or shared, always with an idempotency key so
// that an unanswered acquire can be retried), renewing, inspecting and
// releasing them.
//
// A client retries an operation that got no answer with the very same input
// (the same idempotency key for an acquire), as a careful client does, so
// that faults leave no lease held forever by nobody.
type Workload struct {
	// Clients is how many run at once. Default 8.
	Clients int
	// Locks are the lock names they share. Default two names.
	Locks []string
	// Ops is how many operations each client performs at most. Default 100.
	Ops int
	// Duration stops the clients early. Default: none.
	Duration time.Duration
	// TTL of every lease: longer than the run, so that nothing expires
	// (the model has no clock). Default 10m.
	TTL time.Duration
	// Wait makes about half the acquires blocking, for up to MaxWait.
	Wait    bool
	MaxWait time.Duration // default 200ms
	// Force makes client 0 force-release now and then.
	Force bool
	// Hold is the longest a client holds a lease between steps. Default 2ms.
	Hold time.Duration
	// Retries is how often an unanswered operation is retried before the
	// client gives up. Default 50.
	Retries int
	// RetryDelay is the pause before a retry, e.g. while a server
	// restarts. Default 20ms, doubling up to 500ms.
	RetryDelay time.Duration
	// Seed makes the choices repeatable (the interleaving never is).
	Seed uint64
	// Limit makes shared acquires semaphores of Limit holders; one in ten
	// asks for Limit+1, which is refused while others hold the lock.
	Limit int
	// Multi makes about a fifth of the acquires multi-lock acquires of two
	// of the Locks, each lease then renewed and released on its own.
	Multi bool
}

func (w *Workload) defaults() {
	if w.Clients == 0 {
		w.Clients = 8
	}
	if len(w.Locks) == 0 {
		w.Locks = []string{"lin/a", "lin/b"}
	}
	if w.Ops == 0 {
		w.Ops = 100
	}
	if w.TTL == 0 {
		w.TTL = 10 * time.Minute
	}
	if w.MaxWait == 0 {
		w.MaxWait = 200 * time.Millisecond
	}
	if w.Hold == 0 {
		w.Hold = 2 * time.Millisecond
	}
	if w.Retries == 0 {
		w.Retries = 50
	}
	if w.RetryDelay == 0 {
		w.RetryDelay = 20 * time.Millisecond
	}
}

// Stats count what a run did.
type Stats struct {
	Ops       atomic.Int64 // operations recorded
	Grants    atomic.Int64
	Conflicts atomic.Int64 // lock_conflict and wait_timeout
	Unknown   atomic.Int64 // operations without an answer
	GaveUp    atomic.Int64 // operations abandoned after every retry
}

// String summarises the counts in one line, for logs.
func (s *Stats) String() string {
	return fmt.Sprintf("%d ops, %d grants, %d conflicts, %d unknown, %d abandoned",
		s.Ops.Load(), s.Grants.Load(), s.Conflicts.Load(), s.Unknown.Load(), s.GaveUp.Load())
}

// Run runs the workload against t, recording every operation in rec, until
// each client is done or ctx ends.
func (w Workload) Run(ctx context.Context, t Target, rec *Recorder) *Stats {
	w.defaults()
	if w.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.Duration)
		defer cancel()
	}
	st := &Stats{}
	var wg sync.WaitGroup
	for c := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &client{w: &w, id: c, t: t, rec: rec, st: st, rng: rand.New(rand.NewPCG(w.Seed, uint64(c)))}
			cl.run(ctx)
		}()
	}
	wg.Wait()
	return st
}

type client struct {
	w   *Workload
	id  int
	t   Target
	rec *Recorder
	st  *Stats
	rng *rand.Rand
	ops int
	seq int
}

func (c *client) run(ctx context.Context) {
	for c.ops < c.w.Ops && ctx.Err() == nil {
		name := c.w.Locks[c.rng.IntN(len(c.w.Locks))]
		r := c.rng.Float64()
		switch {
		case r < 0.1:
			c.do(ctx, Input{Kind: Inspect, Name: name})
			continue
		case c.w.Force && c.id == 0 && r < 0.2:
			c.do(ctx, Input{Kind: ForceRelease, Name: name})
			continue
		}
		c.seq++
		in := Input{
			Kind: AcquireTry, Name: name, Holder: fmt.Sprintf("c%d", c.id), Mode: c.mode(),
			TTL: c.w.TTL, IdemKey: fmt.Sprintf("c%d-%d", c.id, c.seq),
		}
		in.Limit = c.limit(in.Mode)
		wait := c.w.Wait && c.rng.IntN(2) == 0
		if wait {
			in.Kind = AcquireWait
			in.Wait = time.Duration(1+c.rng.Int64N(int64(c.w.MaxWait/time.Millisecond))) * time.Millisecond
		}
		if c.w.Multi && len(c.w.Locks) > 1 && c.rng.IntN(5) == 0 {
			c.many(ctx, in, wait)
			continue
		}
		out, ok := c.do(ctx, in)
		if !ok || out.Code != "" {
			continue
		}
		c.holdLease(ctx, name, out.Lease)
	}
}

func (c *client) mode() dlm.Mode {
	if c.rng.IntN(10) < 4 {
		return dlm.Shared
	}
	return dlm.Exclusive
}

// limit returns the limit of a shared acquire (see Workload.Limit).
func (c *client) limit(m dlm.Mode) int {
	switch {
	case m != dlm.Shared || c.w.Limit == 0:
		return 0
	case c.rng.IntN(10) == 0:
		return c.w.Limit + 1
	}
	return c.w.Limit
}

// many asks for two of the locks at once, with in's holder, key and wait,
// and then holds and releases each lease it is granted on its own.
func (c *client) many(ctx context.Context, in Input, wait bool) {
	in.Kind, in.Name, in.Mode, in.Limit = AcquireManyTry, "", 0, 0
	if wait {
		in.Kind = AcquireManyWait
	}
	for _, i := range c.rng.Perm(len(c.w.Locks))[:2] {
		m := c.mode()
		in.Locks = append(in.Locks, LockRef{Name: c.w.Locks[i], Mode: m, Limit: c.limit(m)})
	}
	out, ok := c.do(ctx, in)
	if !ok || out.Code != "" {
		return
	}
	for _, i := range c.rng.Perm(len(in.Locks)) {
		c.holdLease(ctx, in.Locks[i].Name, out.Leases[i].Lease)
	}
}

// holdLease renews and inspects the lease id on name a few times, then
// releases it.
func (c *client) holdLease(ctx context.Context, name, id string) {
	for range c.rng.IntN(3) {
		c.hold(ctx)
		if c.rng.IntN(3) == 0 {
			c.do(ctx, Input{Kind: Inspect, Name: name})
		} else {
			c.do(ctx, Input{Kind: Renew, Name: name, LeaseID: id})
		}
	}
	c.hold(ctx)
	// Released on a fresh context, so that a run that ends leaves nothing
	// held.
	c.do(context.WithoutCancel(ctx), Input{Kind: Release, Name: name, LeaseID: id})
}

func (c *client) hold(ctx context.Context) {
	if d := time.Duration(c.rng.Int64N(int64(c.w.Hold) + 1)); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// do performs in, retrying it with the same input while it gets no answer.
// It reports the answer and whether there was one.
func (c *client) do(ctx context.Context, in Input) (Output, bool) {
	in.Client = c.id
	delay := c.w.RetryDelay
	for try := 0; ; try++ {
		call := c.rec.Begin(in)
		out := c.t.Do(ctx, in)
		call.End(out)
		c.ops++
		c.st.Ops.Add(1)
		if !out.Unknown {
			switch out.Code {
			case "":
				if in.Kind == AcquireTry || in.Kind == AcquireWait || in.Kind.many() {
					c.st.Grants.Add(1)
				}
			case dlm.CodeLockConflict, dlm.CodeWaitTimeout:
				c.st.Conflicts.Add(1)
			}
			return out, true
		}
		c.st.Unknown.Add(1)
		if in.Kind == Inspect {
			return out, false // a read is not worth retrying
		}
		if try == c.w.Retries || context.Cause(ctx) != nil && in.Kind != Release {
			c.st.GaveUp.Add(1)
			return out, false
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			if in.Kind != Release {
				c.st.GaveUp.Add(1)
				return out, false
			}
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}
