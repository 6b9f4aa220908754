package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/wire"
)

// The --json output: the API's own shapes (README, http/openapi.json), one object per line.

// leasesOut shows ls as the API does, with their IDs where the client knows
// them.
func leasesOut(ls []dlm.Lease) []wire.Lease {
	out := make([]wire.Lease, len(ls))
	for i := range ls {
		out[i] = wire.OwnLease(&ls[i])
	}
	return out
}

func lockOut(l *client.LockInfo) wire.Lock {
	out := wire.Lock{Name: l.Name, Scope: string(l.Scope), FencingToken: l.Token, Holders: leasesOut(l.Holders), Waiters: []wire.Waiter{}, Limit: l.Limit}
	for _, w := range l.Waiters {
		out.Waiters = append(out.Waiters, wire.Waiter{HolderID: w.HolderID, Mode: w.Mode.String(), QueuedAt: w.QueuedAt, WaitDeadline: w.Deadline, Limit: w.Limit, Locks: w.Locks})
	}
	if !l.DelayUntil.IsZero() {
		out.LockDelayUntil = &l.DelayUntil
	}
	return out
}

// errorOut is the --json form of an error: the API's error object (README, http/openapi.json),
// so that a script reads one shape whether the server or the CLI refused.
// Errors that carry no API code get the nearest one: invalid_argument for
// usage, lease_ended for a lost lock, unavailable for a server out of
// reach, internal otherwise.
func errorOut(err error, exit int) any {
	type details struct {
		Holders []wire.Lease `json:"holders,omitempty"`
		Reason  string       `json:"reason,omitempty"`
		Field   string       `json:"field,omitempty"`
		Max     int64        `json:"max,omitempty"`
	}
	type body struct {
		Code    string   `json:"code"`
		Message string   `json:"message"`
		Details *details `json:"details,omitempty"`
	}
	b := body{Code: dlm.CodeInternal, Message: errText(err)}
	var (
		de *dlm.Error
		ne net.Error
	)
	switch {
	case errors.As(err, &de):
		b.Code = de.Code
		if len(de.Holders) > 0 || de.Reason != 0 || de.Field != "" {
			b.Details = &details{Holders: wire.Holders(de.Holders), Field: de.Field, Max: de.Max}
			if de.Reason != 0 {
				b.Details.Reason = de.Reason.String()
			}
		}
	case exit == exitUsage:
		b.Code = dlm.CodeInvalidArgument
	case errors.Is(err, client.ErrLockLost):
		b.Code = dlm.CodeLeaseEnded
	case errors.As(err, &ne):
		b.Code = dlm.CodeUnavailable
	}
	return struct {
		Error body `json:"error"`
	}{b}
}

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
