package dlmhttp

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// The JSON shapes of the API (README, http/openapi.json) that only the server writes. Leases, locks and
// events are package wire's, shared with the client and the command line.

// wireTime formats t for the wire.
func wireTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

type wireDryRun struct {
	WouldGrant bool         `json:"would_grant"`
	Holders    []wire.Lease `json:"holders"`
	Waiters    int          `json:"waiters"`
}

type wireLockList struct {
	Locks      []wire.Lock `json:"locks"`
	NextCursor string      `json:"next_cursor"`
}

type wireEnded struct {
	Ended []wire.Lease `json:"ended"`
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
	Status  string `json:"status"`
	Version string `json:"version,omitempty"` // /healthz only: the build's version
}

// writeJSON answers with status and v as JSON. Responses carry no cache: they
// describe state that changes any moment.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here, and they always marshal.
		panic("dlmhttp: marshal response: " + err.Error())
	}
	writeBody(w, status, append(b, '\n'))
}

// writeLease answers 200 with a lease: the lock path's answer, encoded
// without reflection into a pooled buffer.
func writeLease(w http.ResponseWriter, l *wire.Lease) {
	bp := leaseBuffers.Get().(*[]byte)
	b := append(l.AppendJSON((*bp)[:0]), '\n')
	writeBody(w, http.StatusOK, b)
	*bp = b
	leaseBuffers.Put(bp)
}

var leaseBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func writeBody(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	w.WriteHeader(status)
	w.Write(b)
}

// jsonContentType and noStore are the header values of every JSON answer,
// shared rather than made per answer; nothing changes a header once sent.
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
)
