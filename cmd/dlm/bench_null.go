package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// The null server is the ceiling dlm's HTTP figures are read against: it
// answers the two routes of the uncontended workload (acquire and release)
// from a map, decoding and encoding the same JSON, with no durability, no
// authentication and no events. What dlm bench gets from it on a machine is
// what net/http itself allows there, so "dlm reaches 0.6× of the null
// server" means the same on any machine (PERFORMANCE.md). It also serves
// /metrics with the two process figures the bench reads, so that its CPU
// per cycle is measured the same way as dlm's.

// nullLease is the subset of a lease object the bench reads.
type nullLease struct {
	LeaseID      string    `json:"lease_id"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	Mode         string    `json:"mode"`
	HolderID     string    `json:"holder_id"`
	FencingToken int64     `json:"fencing_token"`
	TTLMs        int64     `json:"ttl_ms"`
	AcquiredAt   time.Time `json:"acquired_at"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// nullServer is the null server's state: who holds which name.
type nullServer struct {
	mu     sync.Mutex
	byName map[string]*nullLease
	byID   map[string]*nullLease
	token  int64
}

func newNullServer() http.Handler {
	s := &nullServer{byName: map[string]*nullLease{}, byID: map[string]*nullLease{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/locks/{name}/acquire", s.acquire)
	mux.HandleFunc("DELETE /v1/leases/{id}", s.release)
	mux.HandleFunc("GET /v1/locks/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"name":%q,"scope":"tenant","fencing_token":0,"holders":[],"waiters":[]}`+"\n", r.PathValue("name"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		st, _ := procStats(os.Getpid())
		fmt.Fprintf(w, "process_resident_memory_bytes %g\nprocess_cpu_seconds_total %g\n", st.rss, st.cpu)
	})
	return mux
}

func (s *nullServer) acquire(w http.ResponseWriter, r *http.Request) {
	var body struct {
		HolderID string `json:"holder_id"`
		TTLMs    int64  `json:"ttl_ms"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil || body.HolderID == "" {
		nullError(w, http.StatusBadRequest, "invalid_argument")
		return
	}
	if body.TTLMs == 0 {
		body.TTLMs = 30000
	}
	var id [16]byte
	rand.Read(id[:])
	now := time.Now().UTC()
	name := r.PathValue("name")
	s.mu.Lock()
	if s.byName[name] != nil {
		s.mu.Unlock()
		nullError(w, http.StatusConflict, "lock_conflict")
		return
	}
	s.token++
	l := &nullLease{LeaseID: hex.EncodeToString(id[:]), Name: name, Scope: "tenant", Mode: "exclusive",
		HolderID: body.HolderID, FencingToken: s.token, TTLMs: body.TTLMs,
		AcquiredAt: now, ExpiresAt: now.Add(time.Duration(body.TTLMs) * time.Millisecond)}
	s.byName[name], s.byID[l.LeaseID] = l, l
	s.mu.Unlock()
	json.NewEncoder(w).Encode(l)
}

func (s *nullServer) release(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	l := s.byID[r.PathValue("id")]
	if l != nil {
		delete(s.byID, l.LeaseID)
		delete(s.byName, l.Name)
	}
	s.mu.Unlock()
	if l == nil {
		nullError(w, http.StatusNotFound, "not_found")
		return
	}
	json.NewEncoder(w).Encode(l)
}

func nullError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`+"\n", code, code)
}

// runBenchNull serves the null server on listen until ctx ends or a signal
// arrives. ready, if set, learns the address it listens on.
func runBenchNull(ctx context.Context, listen string, ready func(addr string)) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	srv := &http.Server{Handler: newNullServer(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
