package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/dlmhq/dlm/client"
)

func (m *Main) runLs(ctx context.Context, g *globals, args []string) error {
	fs := m.newFlagSet(g, "ls", "[flags]",
		`Ls lists the locks that are held or waited for, by name.
`)
	var scope scopeFlag
	fs.Var(&scope, "scope", "lock scope: tenant or global")
	prefix := fs.String("prefix", "", "only names starting with `prefix`")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 0, 2, ' ', 0)
	// The header comes with the first page, so that a refused listing
	// prints nothing but its error.
	header := !g.json
	printHeader := func() {
		if header {
			fmt.Fprintln(tw, "NAME\tMODE\tHOLDERS\tWAITERS\tTOKEN")
			header = false
		}
	}
	for l, err := range c.ListAll(ctx, &client.ListOptions{Prefix: *prefix, Scope: client.Scope(scope)}) {
		if err != nil {
			tw.Flush()
			return err
		}
		printHeader()
		if g.json {
			if err := printJSON(m.Stdout, lockOut(&l)); err != nil {
				return err
			}
			continue
		}
		mode, holders := "-", make([]string, len(l.Holders))
		for i, h := range l.Holders {
			mode, holders[i] = h.Mode.String(), h.HolderID
		}
		if len(holders) == 0 {
			holders = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", l.Name, mode, strings.Join(holders, ","), len(l.Waiters), l.Token)
	}
	printHeader()
	return tw.Flush()
}
