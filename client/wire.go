package client

import (
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// Reading the API's JSON shapes (package wire) into the client's types.

func leaseOf(w *wire.Lease) dlm.Lease {
	mode, _ := dlm.ParseMode(w.Mode)
	return dlm.Lease{
		ID:         w.LeaseID,
		Key:        key(w.Scope, w.Name),
		Mode:       mode,
		HolderID:   w.HolderID,
		Token:      w.FencingToken,
		TTL:        time.Duration(w.TTLMs) * time.Millisecond,
		AcquiredAt: w.AcquiredAt,
		ExpiresAt:  w.ExpiresAt,
		Terms: dlm.Terms{
			Limit:     w.Limit,
			LockDelay: time.Duration(w.LockDelayMs) * time.Millisecond,
			MaxHold:   time.Duration(w.MaxHoldMs) * time.Millisecond,
		},
	}
}

func leases(ws []wire.Lease) []dlm.Lease {
	ls := make([]dlm.Lease, len(ws))
	for i := range ws {
		ls[i] = leaseOf(&ws[i])
	}
	return ls
}

func key(scope, name string) dlm.Key {
	if scope == string(ScopeGlobal) {
		return dlm.Key{Namespace: dlm.GlobalNamespace, Name: name}
	}
	return dlm.Key{Namespace: CallerTenant, Name: name}
}

func lockInfoOf(w *wire.Lock) LockInfo {
	info := LockInfo{
		Name:    w.Name,
		Scope:   Scope(w.Scope),
		Token:   w.FencingToken,
		Holders: leases(w.Holders),
		Waiters: make([]Waiter, len(w.Waiters)),
		Limit:   w.Limit,
	}
	if w.LockDelayUntil != nil {
		info.DelayUntil = *w.LockDelayUntil
	}
	for i, x := range w.Waiters {
		mode, _ := dlm.ParseMode(x.Mode)
		info.Waiters[i] = Waiter{HolderID: x.HolderID, Mode: mode, QueuedAt: x.QueuedAt, Deadline: x.WaitDeadline, Limit: x.Limit, Locks: x.Locks}
	}
	return info
}

func eventOf(w *wire.Event) dlm.Event {
	t, _ := dlm.ParseEventType(w.Type)
	mode, _ := dlm.ParseMode(w.Mode)
	return dlm.Event{
		ID:       w.ID,
		Type:     t,
		Key:      key(w.Scope, w.Name),
		HolderID: w.HolderID,
		Mode:     mode,
		Token:    w.FencingToken,
		At:       w.At,
	}
}

// wireError is the body of every error response.
type wireError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details struct {
			Holders []wire.Lease `json:"holders"`
			Reason  string       `json:"reason"`
			Field   string       `json:"field"`
			Max     int64        `json:"max"`
			Name    string       `json:"name"`
		} `json:"details"`
	} `json:"error"`
}
