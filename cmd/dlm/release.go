package main

import (
	"context"
	"fmt"
)

func (m *Main) runRelease(ctx context.Context, g *globals, args []string) error {
	fs := m.newFlagSet(g, "release", "LEASE_ID",
		`Release ends a lease acquired with 'dlm acquire'. If the lease had already
ended (expired or force-released) it fails and says why.
`)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	if err := c.Release(ctx, pos[0]); err != nil {
		return err
	}
	if g.json {
		return printJSON(m.Stdout, map[string]bool{"released": true})
	}
	fmt.Fprintln(m.Stdout, "released")
	return nil
}
