package main

import (
	"context"
	"fmt"
	"os"

	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/wire"
)

func (m *Main) runAcquire(ctx context.Context, g *globals, args []string) error {
	var lf lockFlags
	var idem string
	var dryRun bool
	fs := m.newFlagSet(g, "acquire", "NAME... [flags]",
		`Acquire takes the lock NAME and prints its lease. The lease is not kept
alive: renew it with 'dlm renew LEASE_ID' before it expires, and end it with
'dlm release LEASE_ID'. To hold a lock while a command runs, use 'dlm run'.

By default it waits for the lock as long as it takes (--wait forever), in
its turn behind earlier waiters; --wait 0 tries once, --wait 30s gives up
after 30s. Exits 75 if the lock is held (--wait 0) or the wait times out.

With --idempotency-key, running the same command again returns the same
lease while it lives ("replayed" in --json). The holder then defaults to
the host name alone, so that a rerun from this machine is the same request.

With several names (up to 64) it takes all of them in one step or none, and
prints every lease, in the order given; waiting, it queues on all of them at
once, so two such commands never wait for each other. Each lease is then
renewed and released on its own. The flags apply to every lock.
`)
	lf.register(fs)
	fs.StringVar(&idem, "idempotency-key", "", "repeat a request: the same key returns the same lease while it lives")
	fs.BoolVar(&dryRun, "dry-run", false, "only report whether the lock would be granted now")
	names, err := parseLockNames(fs, args)
	if err != nil {
		return err
	}
	if dryRun && len(names) > 1 {
		return usagef("acquire: --dry-run takes one name")
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	o := lf.options()
	o.IdempotencyKey, o.NoKeepAlive = idem, true
	if h, err := os.Hostname(); err == nil && idem != "" && o.HolderID == "" {
		// hostname:pid would differ on every run, and a retry with
		// another holder is refused (idempotency_key_reused).
		o.HolderID = h
	}
	if dryRun {
		return m.dryRun(ctx, g, c, names[0], o)
	}
	if len(names) > 1 {
		ls, err := lf.acquireMany(ctx, c, names, o, m.Stderr)
		if err != nil {
			return err
		}
		return m.printLeases(g, ls)
	}
	l, err := lf.acquire(ctx, c, names[0], o, m.Stderr)
	if err != nil {
		return err
	}
	if g.json {
		lease := l.Lease()
		out := wire.OwnLease(&lease)
		out.Replayed = l.Replayed()
		return printJSON(m.Stdout, out)
	}
	m.printLease(l)
	return nil
}

// printLeases shows the locks of a multi-lock acquire, in order; --json
// prints the API's answer to it.
func (m *Main) printLeases(g *globals, ls []*client.Lock) error {
	if g.json {
		out := wire.Leases{Leases: make([]wire.Lease, len(ls)), Replayed: true}
		for i, l := range ls {
			lease := l.Lease()
			out.Leases[i] = wire.OwnLease(&lease)
			out.Replayed = out.Replayed && l.Replayed()
		}
		return printJSON(m.Stdout, out)
	}
	for _, l := range ls {
		m.printLease(l)
	}
	return nil
}

// printLease shows one acquired lease for people.
func (m *Main) printLease(l *client.Lock) {
	lease := l.Lease()
	verb := "acquired"
	if l.Replayed() {
		verb = "already held (same idempotency key):"
	}
	fmt.Fprintf(m.Stdout, "%s %s%s (%s%s) for %s\n", verb, lease.Key.Name, scopeNote(lease.Key.Scope()), lease.Mode, limitNote(lease.Limit), lease.HolderID)
	fmt.Fprintf(m.Stdout, "lease_id:      %s\n", lease.ID)
	fmt.Fprintf(m.Stdout, "fencing_token: %d\n", lease.Token)
	fmt.Fprintf(m.Stdout, "expires_at:    %s (%s)\n", clock(lease.ExpiresAt), until(lease.ExpiresAt))
}

// limitNote names a semaphore's limit after its mode, if it has one.
func limitNote(limit int) string {
	if limit == 0 {
		return ""
	}
	return fmt.Sprintf(", limit %d", limit)
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
