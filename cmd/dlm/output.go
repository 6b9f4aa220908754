package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/wire"
)

// The --json output: the API's own shapes (SPEC §3), one object per line.

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
	out := wire.Lock{Name: l.Name, Scope: string(l.Scope), FencingToken: l.Token, Holders: leasesOut(l.Holders), Waiters: []wire.Waiter{}}
	for _, w := range l.Waiters {
		out.Waiters = append(out.Waiters, wire.Waiter{HolderID: w.HolderID, Mode: w.Mode.String(), QueuedAt: w.QueuedAt, WaitDeadline: w.Deadline})
	}
	return out
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
