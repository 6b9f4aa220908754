package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

const tenantsSynopsis = "create NAME | list | keys create TENANT | keys revoke TENANT KEY_ID"

func (m *Main) runTenants(ctx context.Context, g *globals, args []string) error {
	fs := m.newFlagSet(g, "tenants", tenantsSynopsis,
		`Tenants manages tenants and their API keys (admin key). A new key is
printed once; the server keeps only its hash.
`)
	pos, err := parseFlags(fs, args, -1)
	if err != nil {
		return err
	}
	if !validTenantsArgs(pos) {
		return usagef("usage: dlm tenants %s", tenantsSynopsis)
	}
	c, err := g.client(true)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 2 && pos[0] == "create":
		t, k, err := c.CreateTenant(ctx, pos[1])
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(m.Stdout, map[string]any{"tenant": t, "key_id": k.KeyID, "api_key": k.APIKey})
		}
		fmt.Fprintf(m.Stdout, "created tenant %s\nkey_id:  %s\napi_key: %s\n(the key is shown only this once)\n", t.Name, k.KeyID, k.APIKey)
	case len(pos) == 1 && pos[0] == "list":
		ts, err := c.Tenants(ctx)
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(m.Stdout, map[string]any{"tenants": ts})
		}
		tw := tabwriter.NewWriter(m.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCREATED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\n", t.Name, clock(t.CreatedAt))
		}
		return tw.Flush()
	case len(pos) == 3 && pos[0] == "keys" && pos[1] == "create":
		k, err := c.CreateKey(ctx, pos[2])
		if err != nil {
			return err
		}
		if g.json {
			return printJSON(m.Stdout, k)
		}
		fmt.Fprintf(m.Stdout, "key_id:  %s\napi_key: %s\n(the key is shown only this once)\n", k.KeyID, k.APIKey)
	default: // keys revoke TENANT KEY_ID
		if err := c.RevokeKey(ctx, pos[2], pos[3]); err != nil {
			return err
		}
		if g.json {
			return printJSON(m.Stdout, map[string]bool{"revoked": true})
		}
		fmt.Fprintf(m.Stdout, "revoked key %s of %s\n", pos[3], pos[2])
	}
	return nil
}

func validTenantsArgs(pos []string) bool {
	switch {
	case len(pos) == 2 && pos[0] == "create", len(pos) == 1 && pos[0] == "list":
		return true
	case len(pos) >= 2 && pos[0] == "keys":
		return len(pos) == 3 && pos[1] == "create" || len(pos) == 4 && pos[1] == "revoke"
	}
	return false
}
