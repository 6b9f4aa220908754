package main

import (
	"context"
	"fmt"

	"github.com/dlmhq/dlm/wire"
)

func (m *Main) runRenew(ctx context.Context, g *globals, args []string) error {
	fs := m.newFlagSet(g, "renew", "LEASE_ID [flags]",
		`Renew extends a lease acquired with 'dlm acquire' by its TTL (or --ttl) from
now. A lease that has ended is never revived: renew then fails and says why.
`)
	ttl := fs.Duration("ttl", 0, "new lease length (default the lease's own)")
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	lease, err := c.Renew(ctx, pos[0], *ttl)
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(m.Stdout, wire.OwnLease(lease))
	}
	fmt.Fprintf(m.Stdout, "renewed %s%s: token %d, expires %s (%s)\n",
		lease.Key.Name, scopeNote(lease.Key.Scope()), lease.Token, clock(lease.ExpiresAt), until(lease.ExpiresAt))
	return nil
}
