package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/wire"
)

func (m *Main) runWatch(ctx context.Context, g *globals, args []string) error {
	fs := m.newFlagSet(g, "watch", "[flags]",
		`Watch prints lock events as they happen, one line each (one JSON object
each with --json), until interrupted. It reconnects after a dropped
connection without missing or repeating events.
`)
	var o client.WatchOptions
	var scope scopeFlag
	fs.StringVar(&o.Name, "name", "", "only events of the lock `name`")
	fs.StringVar(&o.Prefix, "prefix", "", "only events of names starting with `prefix`")
	fs.Var(&scope, "scope", "only this scope: tenant or global (default both)")
	fs.Int64Var(&o.Since, "since", 0, "first replay the retained events after this event `id`")
	fs.BoolVar(&o.FromStart, "from-start", false, "first replay every retained event, from the oldest")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	scopeSet := false
	fs.Visit(func(f *flag.Flag) { scopeSet = scopeSet || f.Name == "scope" })
	if scopeSet {
		o.Scope = client.Scope(scope)
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	for e, err := range c.Watch(ctx, &o) {
		if err != nil {
			return err
		}
		if g.json {
			if err := printJSON(m.Stdout, wire.FromEvent(&e)); err != nil {
				return err
			}
			continue
		}
		line := fmt.Sprintf("%s  #%d  %-14s %s%s  by %s (%s)", clock(e.At), e.ID, e.Type, e.Key.Name, scopeNote(e.Key.Scope()), e.HolderID, e.Mode)
		if e.Token != 0 {
			line += fmt.Sprintf(" token %d", e.Token)
		}
		fmt.Fprintln(m.Stdout, line)
	}
	return nil
}
