package main

import (
	"context"
	"fmt"

	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/wire"
)

func (m *Main) runAcquire(ctx context.Context, g *globals, args []string) error {
	var lf lockFlags
	var idem string
	var dryRun bool
	fs := m.newFlagSet(g, "acquire", "NAME [flags]",
		`Acquire takes the lock NAME and prints its lease. The lease is not kept
alive: renew it with 'dlm renew LEASE_ID' before it expires, and end it with
'dlm release LEASE_ID'. To hold a lock while a command runs, use 'dlm run'.
Exits 75 if the lock is held (--wait 0) or the wait times out.
`)
	lf.register(fs)
	fs.StringVar(&idem, "idempotency-key", "", "repeat a request: the same key returns the same lease while it lives")
	fs.BoolVar(&dryRun, "dry-run", false, "only report whether the lock would be granted now")
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	name, o := pos[0], lf.options()
	o.IdempotencyKey, o.NoKeepAlive = idem, true
	if dryRun {
		return m.dryRun(ctx, g, c, name, o)
	}
	l, err := lf.acquire(ctx, c, name, o, m.Stderr)
	if err != nil {
		return err
	}
	lease := l.Lease()
	if g.json {
		return printJSON(m.Stdout, wire.OwnLease(&lease))
	}
	fmt.Fprintf(m.Stdout, "acquired %s%s (%s) for %s\n", lease.Key.Name, scopeNote(lease.Key.Scope()), lease.Mode, lease.HolderID)
	fmt.Fprintf(m.Stdout, "lease_id:      %s\n", lease.ID)
	fmt.Fprintf(m.Stdout, "fencing_token: %d\n", lease.Token)
	fmt.Fprintf(m.Stdout, "expires_at:    %s (%s)\n", clock(lease.ExpiresAt), until(lease.ExpiresAt))
	return nil
}

func (m *Main) dryRun(ctx context.Context, g *globals, c *client.Client, name string, o *client.AcquireOptions) error {
	d, err := c.WouldGrant(ctx, name, o)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(m.Stdout, struct {
			WouldGrant bool         `json:"would_grant"`
			Holders    []wire.Lease `json:"holders"`
			Waiters    int          `json:"waiters"`
		}{d.WouldGrant, leasesOut(d.Holders), d.Waiters})
	}
	verdict := "would be granted"
	if !d.WouldGrant {
		verdict = "would not be granted"
	}
	fmt.Fprintf(m.Stdout, "%s %s now (%d holders, %d waiters)\n", name, verdict, len(d.Holders), d.Waiters)
	return nil
}
