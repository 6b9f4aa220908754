// Package wire holds the JSON shapes of the dlm HTTP API (the API (README, http/openapi.json)): the
// server encodes them, the Go client decodes them, and the command line
// prints them with --json, so the three cannot drift apart.
//
// Times are RFC 3339 with nanoseconds in UTC, durations integer milliseconds
// in fields ending _ms, and lists are never null. It imports the root package
// only, so the client stays free of server code.
package wire

import (
	"time"

	"github.com/dlmhq/dlm"
)

// Lease is a lease object. LeaseID is a bearer capability: it is set only in
// answers to the lease's owner (acquire, get, renew, release).
type Lease struct {
	LeaseID      string    `json:"lease_id,omitempty"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	Mode         string    `json:"mode"`
	HolderID     string    `json:"holder_id"`
	FencingToken int64     `json:"fencing_token"`
	TTLMs        int64     `json:"ttl_ms"`
	AcquiredAt   time.Time `json:"acquired_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	Replayed     bool      `json:"replayed,omitempty"`
}

// Holder is l as anybody may see it: without its ID.
func Holder(l *dlm.Lease) Lease {
	return Lease{
		Name:         l.Key.Name,
		Scope:        l.Key.Scope(),
		Mode:         l.Mode.String(),
		HolderID:     l.HolderID,
		FencingToken: l.Token,
		TTLMs:        l.TTL.Milliseconds(),
		AcquiredAt:   l.AcquiredAt.UTC(),
		ExpiresAt:    l.ExpiresAt.UTC(),
	}
}

// OwnLease is l as its owner sees it: with its ID.
func OwnLease(l *dlm.Lease) Lease {
	w := Holder(l)
	w.LeaseID = l.ID
	return w
}

// Holders shows ls without their IDs; an empty list is [], never null.
func Holders(ls []dlm.Lease) []Lease {
	ws := make([]Lease, len(ls))
	for i := range ls {
		ws[i] = Holder(&ls[i])
	}
	return ws
}

// Waiter is a queued acquire as inspect and list show it.
type Waiter struct {
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	QueuedAt     time.Time `json:"queued_at"`
	WaitDeadline time.Time `json:"wait_deadline"`
}

// Lock is a lock as inspect and list show it.
type Lock struct {
	Name         string   `json:"name"`
	Scope        string   `json:"scope"`
	FencingToken int64    `json:"fencing_token"`
	Holders      []Lease  `json:"holders"`
	Waiters      []Waiter `json:"waiters"`
}

// FromLock shows s, holders without their IDs.
func FromLock(s *dlm.LockState) Lock {
	w := Lock{
		Name:         s.Key.Name,
		Scope:        s.Key.Scope(),
		FencingToken: s.Token,
		Holders:      Holders(s.Holders),
		Waiters:      make([]Waiter, len(s.Waiters)),
	}
	for i, x := range s.Waiters {
		w.Waiters[i] = Waiter{HolderID: x.HolderID, Mode: x.Mode.String(), QueuedAt: x.QueuedAt.UTC(), WaitDeadline: x.Deadline.UTC()}
	}
	return w
}

// Event is an entry of the event log. It names the grant by its fencing
// token and never carries a lease ID.
type Event struct {
	ID           int64     `json:"id"`
	Type         string    `json:"type"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	FencingToken int64     `json:"fencing_token"`
	At           time.Time `json:"at"`
}

// FromEvent shows e.
func FromEvent(e *dlm.Event) Event {
	return Event{
		ID: e.ID, Type: e.Type.String(), Name: e.Key.Name, Scope: e.Key.Scope(),
		HolderID: e.HolderID, Mode: e.Mode.String(), FencingToken: e.Token, At: e.At.UTC(),
	}
}
