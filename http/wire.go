package dlmhttp

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/dlmhq/dlm"
)

// The JSON shapes of SPEC §3. Times are RFC 3339 with nanoseconds in UTC,
// durations integer milliseconds in fields ending _ms, and lists are never
// null.

// wireLease is a lease object. LeaseID is set only in answers to the lease's
// owner: acquire, get, renew and release.
type wireLease struct {
	LeaseID      string `json:"lease_id,omitempty"`
	Name         string `json:"name"`
	Scope        string `json:"scope"`
	Mode         string `json:"mode"`
	HolderID     string `json:"holder_id"`
	FencingToken int64  `json:"fencing_token"`
	TTLMs        int64  `json:"ttl_ms"`
	AcquiredAt   string `json:"acquired_at"`
	ExpiresAt    string `json:"expires_at"`
	Replayed     bool   `json:"replayed,omitempty"`
}

// wireTime formats t for the wire.
func wireTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ownLease is l as shown to its owner, with its ID.
func ownLease(l *dlm.Lease) wireLease {
	w := holder(l)
	w.LeaseID = l.ID
	return w
}

// holder is l as shown to anybody: without its ID.
func holder(l *dlm.Lease) wireLease {
	return wireLease{
		Name:         l.Key.Name,
		Scope:        l.Key.Scope(),
		Mode:         l.Mode.String(),
		HolderID:     l.HolderID,
		FencingToken: l.Token,
		TTLMs:        l.TTL.Milliseconds(),
		AcquiredAt:   wireTime(l.AcquiredAt),
		ExpiresAt:    wireTime(l.ExpiresAt),
	}
}

func holders(ls []dlm.Lease) []wireLease {
	ws := make([]wireLease, len(ls))
	for i := range ls {
		ws[i] = holder(&ls[i])
	}
	return ws
}

type wireWaiter struct {
	HolderID     string `json:"holder_id"`
	Mode         string `json:"mode"`
	QueuedAt     string `json:"queued_at"`
	WaitDeadline string `json:"wait_deadline"`
}

// wireLock is a lock as inspect and list show it.
type wireLock struct {
	Name         string       `json:"name"`
	Scope        string       `json:"scope"`
	FencingToken int64        `json:"fencing_token"`
	Holders      []wireLease  `json:"holders"`
	Waiters      []wireWaiter `json:"waiters"`
}

func lock(s *dlm.LockState) wireLock {
	w := wireLock{
		Name:         s.Key.Name,
		Scope:        s.Key.Scope(),
		FencingToken: s.Token,
		Holders:      holders(s.Holders),
		Waiters:      make([]wireWaiter, len(s.Waiters)),
	}
	for i, x := range s.Waiters {
		w.Waiters[i] = wireWaiter{
			HolderID:     x.HolderID,
			Mode:         x.Mode.String(),
			QueuedAt:     wireTime(x.QueuedAt),
			WaitDeadline: wireTime(x.Deadline),
		}
	}
	return w
}

type wireDryRun struct {
	WouldGrant bool        `json:"would_grant"`
	Holders    []wireLease `json:"holders"`
	Waiters    int         `json:"waiters"`
}

type wireLockList struct {
	Locks      []wireLock `json:"locks"`
	NextCursor string     `json:"next_cursor"`
}

type wireEnded struct {
	Ended []wireLease `json:"ended"`
}

type wireTenant struct {
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
}

func tenant(t *dlm.Tenant) wireTenant {
	return wireTenant{Name: t.Name, CreatedAt: wireTime(t.CreatedAt)}
}

type wireTenantList struct {
	Tenants []wireTenant `json:"tenants"`
}

type wireNewKey struct {
	KeyID  string `json:"key_id"`
	APIKey string `json:"api_key"`
}

type wireNewTenant struct {
	Tenant wireTenant `json:"tenant"`
	wireNewKey
}

type wireStatus struct {
	Status string `json:"status"`
}

// writeJSON answers with status and v as JSON. Responses carry no cache: they
// describe state that changes any moment.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here, and they always marshal.
		panic("dlmhttp: marshal response: " + err.Error())
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
