package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dlmhq/dlm/client"
)

func (m *Main) runStatus(ctx context.Context, g *globals, args []string) error {
	fs := m.newFlagSet(g, "status", "NAME [flags]",
		`Status shows who holds the lock NAME, who waits for it (in order), and the
last fencing token issued.
`)
	var scope scopeFlag
	fs.Var(&scope, "scope", "lock scope: tenant or global")
	name, err := parseLockName(fs, args)
	if err != nil {
		return err
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	info, err := c.Inspect(ctx, name, client.Scope(scope))
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(m.Stdout, lockOut(info))
	}
	printLock(m.Stdout, info)
	return nil
}

// printLock shows one lock for people.
func printLock(w io.Writer, l *client.LockInfo) {
	state := "free"
	if len(l.Holders) > 0 {
		state = "held"
	}
	if l.Limit > 0 {
		state = fmt.Sprintf("%s, semaphore of %d (%d taken)", state, l.Limit, len(l.Holders))
	}
	if !l.DelayUntil.IsZero() {
		state = fmt.Sprintf("%s, lock-delay until %s (%s)", state, clock(l.DelayUntil), until(l.DelayUntil))
	}
	fmt.Fprintf(w, "%s%s: %s, last fencing token %d\n", l.Name, scopeNote(string(l.Scope)), state, l.Token)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(l.Holders) > 0 {
		fmt.Fprintln(tw, "  HOLDER\tMODE\tTOKEN\tACQUIRED\tEXPIRES")
		for _, h := range l.Holders {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", h.HolderID, h.Mode, h.Token, until(h.AcquiredAt), until(h.ExpiresAt))
		}
	}
	if len(l.Waiters) > 0 {
		fmt.Fprintln(tw, "  WAITER\tMODE\t\tQUEUED\tGIVES UP")
		for _, x := range l.Waiters {
			fmt.Fprintf(tw, "  %s\t%s\t\t%s\t%s%s\n", x.HolderID, x.Mode, until(x.QueuedAt), until(x.Deadline), locksNote(x.Locks))
		}
	}
	tw.Flush()
}

// locksNote says that a waiter is a multi-lock acquire, and of how many.
func locksNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("\t(with %d locks)", n)
}
