package main

import (
	"context"
	"fmt"

	"github.com/dlmhq/dlm/client"
)

func (m *Main) runForceRelease(ctx context.Context, g *globals, args []string) error {
	fs := m.newFlagSet(g, "force-release", "NAME [flags]",
		`Force-release ends every lease on the lock NAME (admin key). The holders
find out at their next renewal; the lock's waiters are served at once.
`)
	var scope scopeFlag
	fs.Var(&scope, "scope", "lock scope: tenant or global")
	tenant := fs.String("tenant", "default", "the `tenant` whose lock it is (tenant scope)")
	name, err := parseLockName(fs, args)
	if err != nil {
		return err
	}
	c, err := g.client(true)
	if err != nil {
		return err
	}
	ended, err := c.ForceRelease(ctx, *tenant, name, client.Scope(scope))
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(m.Stdout, map[string]any{"ended": leasesOut(ended)})
	}
	fmt.Fprintf(m.Stdout, "force-released %s: %d leases ended\n", name, len(ended))
	for _, l := range ended {
		fmt.Fprintf(m.Stdout, "  %s (%s) token %d\n", l.HolderID, l.Mode, l.Token)
	}
	return nil
}
