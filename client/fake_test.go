package client

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/dlmhq/dlm/wire"
)

// fakeServer speaks just enough of the wire protocol (acquire without
// waiting, renew, release) for the keep-alive tests that run in a
// testing/synctest bubble, where a real server's I/O cannot be faked. Tests
// of the whole protocol run against the real server.
type fakeServer struct {
	mu     sync.Mutex
	token  int64
	leases map[string]*fakeLease // by lease id
	idem   map[string]string     // idempotency key -> lease id
	ended  map[string]string     // lease id -> end reason
	renews int
}

type fakeLease struct {
	wire    wire.Lease
	expires time.Time
}

func newFakeServer() *fakeServer {
	return &fakeServer{leases: map[string]*fakeLease{}, idem: map[string]string{}, ended: map[string]string{}}
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for id, l := range f.leases {
		if !now.Before(l.expires) {
			delete(f.leases, id)
			f.ended[id] = "expired"
		}
	}
	path := r.URL.Path
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/acquire"):
		var b acquireBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			fakeError(w, 400, "invalid_argument", "", err.Error())
			return
		}
		if id, ok := f.idem[b.IdempotencyKey]; ok && f.leases[id] != nil {
			out := f.leases[id].wire
			out.Replayed = true
			json.NewEncoder(w).Encode(out)
			return
		}
		name := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/locks/"), "/acquire")
		for _, l := range f.leases {
			if l.wire.Name == name {
				fakeError(w, 409, "lock_conflict", "", "held")
				return
			}
		}
		f.token++
		ttl := time.Duration(b.TTLMs) * time.Millisecond
		l := &fakeLease{expires: now.Add(ttl), wire: wire.Lease{
			LeaseID: fmt.Sprintf("lease-%d", f.token), Name: name, Scope: b.Scope, Mode: b.Mode,
			HolderID: b.HolderID, FencingToken: f.token, TTLMs: b.TTLMs, AcquiredAt: now, ExpiresAt: now.Add(ttl),
		}}
		f.leases[l.wire.LeaseID] = l
		f.idem[b.IdempotencyKey] = l.wire.LeaseID
		json.NewEncoder(w).Encode(l.wire)
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/renew"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/leases/"), "/renew")
		l := f.leases[id]
		if l == nil {
			f.gone(w, id)
			return
		}
		f.renews++
		l.expires = now.Add(time.Duration(l.wire.TTLMs) * time.Millisecond)
		l.wire.ExpiresAt = l.expires
		json.NewEncoder(w).Encode(l.wire)
	case r.Method == http.MethodDelete:
		id := strings.TrimPrefix(path, "/v1/leases/")
		l := f.leases[id]
		if l == nil {
			f.gone(w, id)
			return
		}
		delete(f.leases, id)
		f.ended[id] = "released"
		json.NewEncoder(w).Encode(l.wire)
	default:
		fakeError(w, 404, "not_found", "", "no route")
	}
}

// forceRelease ends every lease, as an operator would.
func (f *fakeServer) forceRelease() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.leases {
		delete(f.leases, id)
		f.ended[id] = "force_released"
	}
}

func (f *fakeServer) renewCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renews
}

func (f *fakeServer) gone(w http.ResponseWriter, id string) {
	if reason, ok := f.ended[id]; ok {
		fakeError(w, 410, "lease_ended", reason, "lease ended")
		return
	}
	fakeError(w, 404, "not_found", "", "no such lease")
}

func fakeError(w http.ResponseWriter, status int, code, reason, msg string) {
	w.WriteHeader(status)
	var e wireError
	e.Error.Code, e.Error.Message, e.Error.Details.Reason = code, msg, reason
	json.NewEncoder(w).Encode(e)
}

// handlerTransport serves requests with a handler in the calling goroutine,
// with no network: what testing/synctest needs.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
