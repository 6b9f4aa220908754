package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
)

// The --json output: the API's own shapes (SPEC §3), one object per line.

type leaseJSON struct {
	LeaseID      string    `json:"lease_id,omitempty"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	Mode         string    `json:"mode"`
	HolderID     string    `json:"holder_id"`
	FencingToken int64     `json:"fencing_token"`
	TTLMs        int64     `json:"ttl_ms"`
	AcquiredAt   time.Time `json:"acquired_at"`
	ExpiresAt    time.Time `json:"expires_at"`
}

func leaseOut(l dlm.Lease) leaseJSON {
	return leaseJSON{
		LeaseID: l.ID, Name: l.Key.Name, Scope: l.Key.Scope(), Mode: l.Mode.String(), HolderID: l.HolderID,
		FencingToken: l.Token, TTLMs: l.TTL.Milliseconds(), AcquiredAt: l.AcquiredAt, ExpiresAt: l.ExpiresAt,
	}
}

func leasesOut(ls []dlm.Lease) []leaseJSON {
	out := make([]leaseJSON, len(ls))
	for i, l := range ls {
		out[i] = leaseOut(l)
	}
	return out
}

type waiterJSON struct {
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	QueuedAt     time.Time `json:"queued_at"`
	WaitDeadline time.Time `json:"wait_deadline"`
}

type lockJSON struct {
	Name         string       `json:"name"`
	Scope        string       `json:"scope"`
	FencingToken int64        `json:"fencing_token"`
	Holders      []leaseJSON  `json:"holders"`
	Waiters      []waiterJSON `json:"waiters"`
}

func lockOut(l *client.LockInfo) lockJSON {
	out := lockJSON{Name: l.Name, Scope: string(l.Scope), FencingToken: l.Token, Holders: leasesOut(l.Holders), Waiters: []waiterJSON{}}
	for _, w := range l.Waiters {
		out.Waiters = append(out.Waiters, waiterJSON{HolderID: w.HolderID, Mode: w.Mode.String(), QueuedAt: w.QueuedAt, WaitDeadline: w.Deadline})
	}
	return out
}

type eventJSON struct {
	ID           int64     `json:"id"`
	Type         string    `json:"type"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	HolderID     string    `json:"holder_id"`
	Mode         string    `json:"mode"`
	FencingToken int64     `json:"fencing_token"`
	At           time.Time `json:"at"`
}

func eventOut(e dlm.Event) eventJSON {
	return eventJSON{
		ID: e.ID, Type: e.Type.String(), Name: e.Key.Name, Scope: e.Key.Scope(), HolderID: e.HolderID,
		Mode: e.Mode.String(), FencingToken: e.Token, At: e.At,
	}
}

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// until says how far t is from now, for people: "in 29s", "3s ago", "now".
func until(t time.Time) string {
	d := time.Until(t).Round(100 * time.Millisecond)
	switch {
	case d == 0:
		return "now"
	case d < 0:
		return (-d).String() + " ago"
	}
	return "in " + d.String()
}

// scopeNote is "" for the tenant scope and " (global)" for the global one.
func scopeNote(s string) string {
	if s == string(client.ScopeGlobal) {
		return " (global)"
	}
	return ""
}

// timeFormat is how times are shown to people (in local time).
const timeFormat = "2006-01-02 15:04:05.000 MST"

// clock formats t for people, in local time.
func clock(t time.Time) string { return t.Local().Format(timeFormat) }
