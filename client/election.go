package client

import (
	"context"
	"errors"
	"iter"
	"sync"

	"github.com/dlmhq/dlm"
)

// ErrNotLeader is returned by Resign when the election was not won, and by
// Leader when nobody leads.
var ErrNotLeader = errors.New("dlm: not the leader")

// Election is a leader election on one lock name, after etcd's
// concurrency.Election: candidates Campaign, the winner holds the lock
// exclusively, and its value (the lease's holder id) names the leader.
//
// Leadership stands on ReleaseOnClose: the winner's lease ends with its
// session, so a leader that crashes or loses its connection is replaced as
// soon as the server notices (at most 30 s without pongs; at once for a
// closed socket), not when a TTL runs out. The leader learns of its loss
// through Lost, which fires when the session breaks, before the server
// releases the lease, and the moment the lease ends in any other way.
// Candidates queue FIFO, so leadership passes in campaign order.
//
// An Election is safe for concurrent use.
type Election struct {
	c     *Client
	name  string
	scope Scope

	mu   sync.Mutex
	lock *Lock
}

// NewElection returns the election on the lock name in scope (zero: the
// tenant).
func (c *Client) NewElection(name string, scope Scope) *Election {
	return &Election{c: c, name: name, scope: scope}
}

// Campaign waits until this candidate is elected with value (a holder id:
// 1–128 printable characters), or ctx ends. Campaigning again while leading
// is an error.
func (e *Election) Campaign(ctx context.Context, value string) error {
	e.mu.Lock()
	if e.lock != nil && e.lock.Err() == nil {
		e.mu.Unlock()
		return dlm.Invalid("value", "already leading this election")
	}
	e.mu.Unlock()
	l, err := e.c.Acquire(ctx, e.name, &AcquireOptions{HolderID: value, Scope: e.scope, ReleaseOnClose: true})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.lock = l
	e.mu.Unlock()
	return nil
}

// Resign gives leadership up, so that the next candidate is elected.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	l := e.lock
	e.lock = nil
	e.mu.Unlock()
	if l == nil {
		return ErrNotLeader
	}
	return l.Release(ctx)
}

// Lost returns a channel closed when leadership won by Campaign is lost
// (not by Resign), or nil if this candidate does not lead.
func (e *Election) Lost() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lock == nil {
		return nil
	}
	return e.lock.Lost()
}

// Token returns the fencing token of this candidate's term, or 0 if it does
// not lead: every term's token is greater than those before it, so writes
// a leader makes can be fenced against a deposed one.
func (e *Election) Token() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lock == nil {
		return 0
	}
	return e.lock.Token()
}

// Leader returns the current leader's value and term token, or ErrNotLeader
// if nobody leads.
func (e *Election) Leader(ctx context.Context) (value string, token int64, err error) {
	info, err := e.c.Inspect(ctx, e.name, e.scope)
	if err != nil {
		return "", 0, err
	}
	if len(info.Holders) == 0 {
		return "", 0, ErrNotLeader
	}
	return info.Holders[0].HolderID, info.Holders[0].Token, nil
}

// Observe yields the value of each new leader, starting with the current
// one if there is one, until ctx ends or the watch fails (it yields that
// error and stops). A leader is yielded once per term, so a candidate
// elected twice is yielded twice.
func (e *Election) Observe(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		// Where the log ends, then the leader: a term that begins in
		// between is in both, and its token tells.
		wo := WatchOptions{Name: e.name, Scope: scopeOr(e.scope)}
		since, err := e.c.watchStart(ctx, &wo)
		if err != nil {
			yield("", err)
			return
		}
		wo.Since, wo.sinceZero = max(since, 0), since <= 0
		info, err := e.c.Inspect(ctx, e.name, e.scope)
		if err != nil {
			yield("", err)
			return
		}
		last := info.Token // terms up to here are known
		if len(info.Holders) > 0 && !yield(info.Holders[0].HolderID, nil) {
			return
		}
		for ev, err := range e.c.Watch(ctx, &wo) {
			if err != nil {
				yield("", err)
				return
			}
			if ev.Type != dlm.EventAcquired || ev.Token <= last {
				continue
			}
			last = ev.Token
			if !yield(ev.HolderID, nil) {
				return
			}
		}
	}
}

func scopeOr(s Scope) Scope {
	if s == "" {
		return ScopeTenant
	}
	return s
}
