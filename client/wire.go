package client

import (
	"time"

	"github.com/dlmhq/dlm"
)

// The JSON shapes of SPEC §3, as the server sends them.

type wireLease struct {
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

func (w *wireLease) lease() dlm.Lease {
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
	}
}

func leases(ws []wireLease) []dlm.Lease {
	ls := make([]dlm.Lease, len(ws))
	for i := range ws {
		ls[i] = ws[i].lease()
	}
	return ls
}

func key(scope, name string) dlm.Key {
	if scope == string(ScopeGlobal) {
		return dlm.Key{Namespace: dlm.GlobalNamespace, Name: name}
	}
	return dlm.Key{Namespace: CallerTenant, Name: name}
}

type wireWaiter struct {
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	QueuedAt     time.Time `json:"queued_at"`
	WaitDeadline time.Time `json:"wait_deadline"`
}

type wireLock struct {
	Name         string       `json:"name"`
	Scope        string       `json:"scope"`
	FencingToken int64        `json:"fencing_token"`
	Holders      []wireLease  `json:"holders"`
	Waiters      []wireWaiter `json:"waiters"`
}

func (w *wireLock) info() LockInfo {
	info := LockInfo{
		Name:    w.Name,
		Scope:   Scope(w.Scope),
		Token:   w.FencingToken,
		Holders: leases(w.Holders),
		Waiters: make([]Waiter, len(w.Waiters)),
	}
	for i, x := range w.Waiters {
		mode, _ := dlm.ParseMode(x.Mode)
		info.Waiters[i] = Waiter{HolderID: x.HolderID, Mode: mode, QueuedAt: x.QueuedAt, Deadline: x.WaitDeadline}
	}
	return info
}

type wireEvent struct {
	ID           int64     `json:"id"`
	Type         string    `json:"type"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	FencingToken int64     `json:"fencing_token"`
	At           time.Time `json:"at"`
}

func (w *wireEvent) event() dlm.Event {
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
			Holders []wireLease `json:"holders"`
			Reason  string      `json:"reason"`
			Field   string      `json:"field"`
		} `json:"details"`
	} `json:"error"`
}
