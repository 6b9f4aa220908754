package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// watchServer serves GET /v1/watch from a fixed log of events with ids
// 1..n. Each connection sends at most perConn events and then drops, so
// clients must resume; a since below oldest is answered "compacted".
type watchServer struct {
	n, perConn, oldest int64

	mu     sync.Mutex
	sinces []string // the since of each connection, in order
}

func (s *watchServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer key" {
		fakeError(w, 401, "unauthenticated", "", "bad key")
		return
	}
	if r.URL.Path == "/v1/events" {
		s.history(w, r)
		return
	}
	s.mu.Lock()
	s.sinces = append(s.sinces, r.URL.Query().Get("since"))
	s.mu.Unlock()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	if since < s.oldest {
		conn.Close(websocket.StatusPolicyViolation, dlm.CodeCompacted)
		return
	}
	for id, sent := since+1, int64(0); id <= s.n && sent < s.perConn; id, sent = id+1, sent+1 {
		b, _ := json.Marshal(wire.Event{ID: id, Type: "acquired", Name: r.URL.Query().Get("name"), Scope: "tenant",
			HolderID: "w", Mode: "exclusive", FencingToken: id, At: time.Unix(id, 0).UTC()})
		if err := conn.Write(r.Context(), websocket.MessageText, b); err != nil {
			return
		}
	}
	if since+s.perConn >= s.n {
		<-r.Context().Done() // all sent: stay open, like a live watch
	}
}

// history answers GET /v1/events?limit=1: the first retained event after
// since, or none and the end of the log.
func (s *watchServer) history(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	page := struct {
		Events    []wire.Event `json:"events"`
		NextSince int64        `json:"next_since"`
	}{Events: []wire.Event{}, NextSince: min(since, s.n)}
	if id := max(since+1, s.oldest, 1); id <= s.n {
		page.Events, page.NextSince = append(page.Events, wire.Event{ID: id, Type: "acquired", Name: "a", Scope: "tenant", HolderID: "w", Mode: "exclusive", FencingToken: id}), id
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(page)
}

func watchClient(t *testing.T, h http.Handler, key string) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, key, &Options{RetryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWatchResumesAfterDroppedConnection(t *testing.T) {
	s := &watchServer{n: 10, perConn: 3}
	c := watchClient(t, s, "key")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []int64
	for e, err := range c.Watch(ctx, &WatchOptions{Name: "a", FromStart: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != dlm.EventAcquired || e.Key.Name != "a" || e.Key.Namespace != CallerTenant || e.Token != e.ID {
			t.Errorf("event = %+v", e)
		}
		ids = append(ids, e.ID)
		if e.ID == 10 {
			break
		}
	}
	for i, id := range ids {
		if id != int64(i+1) {
			t.Fatalf("ids = %v, want 1..10 once each, in order", ids)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if want := []string{"0", "3", "6", "9"}; !slices.Equal(s.sinces, want) {
		t.Errorf("connections asked since %q, want %q", s.sinces, want)
	}
}

func TestWatchCompacted(t *testing.T) {
	c := watchClient(t, &watchServer{n: 10, perConn: 10, oldest: 5}, "key")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, err := range c.Watch(ctx, &WatchOptions{Since: 2}) {
		if !errors.Is(err, ErrCompacted) {
			t.Fatalf("err = %v, want ErrCompacted", err)
		}
	}
}

func TestWatchRefused(t *testing.T) {
	c := watchClient(t, &watchServer{n: 1, perConn: 1}, "wrong")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	for _, err := range c.Watch(ctx, nil) {
		n++
		if !errors.Is(err, dlm.ErrUnauthenticated) {
			t.Errorf("err = %v, want unauthenticated", err)
		}
	}
	if n != 1 {
		t.Errorf("yielded %d times, want one error", n)
	}
}

func TestWatchStopsWhenCtxEnds(t *testing.T) {
	c := watchClient(t, &watchServer{n: 1, perConn: 1}, "key")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last error
	for e, err := range c.Watch(ctx, &WatchOptions{FromStart: true}) {
		if err != nil {
			last = err
			break
		}
		if e.ID == 1 {
			cancel()
		}
	}
	if !errors.Is(last, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", last)
	}
}
