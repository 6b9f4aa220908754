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

	"github.com/coder/websocket"
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
	mux.HandleFunc("GET /v1/session", s.session)
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
	l, code := s.grant(r.PathValue("name"), body.HolderID, body.TTLMs)
	if l == nil {
		nullError(w, http.StatusConflict, code)
		return
	}
	json.NewEncoder(w).Encode(l)
}

// grant takes name for holder, or answers the error code why not.
func (s *nullServer) grant(name, holder string, ttlMs int64) (*nullLease, string) {
	if ttlMs == 0 {
		ttlMs = 30000
	}
	var id [16]byte
	rand.Read(id[:])
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byName[name] != nil {
		return nil, "lock_conflict"
	}
	s.token++
	l := &nullLease{LeaseID: hex.EncodeToString(id[:]), Name: name, Scope: "tenant", Mode: "exclusive",
		HolderID: holder, FencingToken: s.token, TTLMs: ttlMs,
		AcquiredAt: now, ExpiresAt: now.Add(time.Duration(ttlMs) * time.Millisecond)}
	s.byName[name], s.byID[l.LeaseID] = l, l
	return l, ""
}

// end releases lease id, or returns nil if there is none.
func (s *nullServer) end(id string) *nullLease {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.byID[id]
	if l != nil {
		delete(s.byID, l.LeaseID)
		delete(s.byName, l.Name)
	}
	return l
}

func (s *nullServer) release(w http.ResponseWriter, r *http.Request) {
	l := s.end(r.PathValue("id"))
	if l == nil {
		nullError(w, http.StatusNotFound, "not_found")
		return
	}
	json.NewEncoder(w).Encode(l)
}

// session serves the session protocol's acquire (try once) and release the
// same way, one request at a time per connection, each answered with the
// same JSON frame as dlm's: the ceiling of dlm bench --protocol session.
func (s *nullServer) session(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(64 << 10)
	ctx := context.WithoutCancel(r.Context())
	type reply struct {
		ID     int64      `json:"id"`
		Result *nullLease `json:"result,omitempty"`
		Error  *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error,omitempty"`
	}
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		var req struct {
			ID       int64  `json:"id"`
			Op       string `json:"op"`
			Name     string `json:"name"`
			HolderID string `json:"holder_id"`
			TTLMs    int64  `json:"ttl_ms"`
			LeaseID  string `json:"lease_id"`
		}
		rep := reply{}
		code := "invalid_argument"
		if json.Unmarshal(msg, &req) == nil {
			rep.ID = req.ID
			switch req.Op {
			case "acquire":
				rep.Result, code = s.grant(req.Name, req.HolderID, req.TTLMs)
			case "release":
				if rep.Result = s.end(req.LeaseID); rep.Result == nil {
					code = "not_found"
				}
			}
		}
		if rep.Result == nil {
			rep.Error = &struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}{code, code}
		}
		b, _ := json.Marshal(rep)
		if c.Write(ctx, websocket.MessageText, b) != nil {
			return
		}
	}
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
