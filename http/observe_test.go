package dlmhttp_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"context"
	"net/http"
	"strings"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	dlmhttp "github.com/dlmhq/dlm/http"
	"github.com/google/go-cmp/cmp"
)

// observations records what WithObserver reports.
type observations struct {
	mu  sync.Mutex
	got []string
}

func (o *observations) observe(route, method string, status int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, fmt.Sprintf("%s %s %d", method, route, status))
	if d <= 0 {
		o.got = append(o.got, "no duration")
	}
}

func (o *observations) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got)
}

// TestObserver checks that every request is reported once, by route
// pattern and never by path, with the status sent.
func TestObserver(t *testing.T) {
	var o observations
	s := testserver.New(t, &testserver.Options{Handler: []dlmhttp.Option{dlmhttp.WithObserver(o.observe)}})
	a := tenantAPI(t, s)
	a.must(200, "GET", "/healthz", nil)
	l := a.must(200, "POST", "/v1/locks/orders%2F42/acquire", map[string]any{"holder_id": "h"})
	a.wantError(409, "lock_conflict", "POST", "/v1/locks/orders/42/acquire", map[string]any{"holder_id": "h2"})
	(&api{t, s.URL, ""}).wantError(401, "unauthenticated", "POST", "/v1/locks/x/acquire", map[string]any{"holder_id": "h"})
	a.must(200, "GET", "/v1/locks/orders%2F42", nil)
	a.must(200, "DELETE", "/v1/leases/"+l["lease_id"].(string), nil)
	a.acquire("held", "h", nil)
	leaveQueue(t, s, "held")
	dlmtest.Eventually(t, "the abandoned acquire is reported", func() bool { return len(o.list()) == 8 })
	a.wantError(404, "not_found", "GET", "/nope/orders", nil)
	if r := a.do("BREW", "/healthz", nil); r.status != 405 {
		t.Fatalf("BREW /healthz = %d, want 405", r.status)
	}
	c := dial(t, s, s.TenantKey, "")
	c.Close(websocket.StatusNormalClosure, "")

	want := []string{
		"GET /healthz 200",
		"POST /v1/locks/{name...}/acquire 200",
		"POST /v1/locks/{name...}/acquire 409",
		"POST /v1/locks/{name...}/acquire 401",
		"GET /v1/locks/{name...} 200",
		"DELETE /v1/leases/{lease_id} 200",
		"POST /v1/locks/{name...}/acquire 200",
		"POST /v1/locks/{name...}/acquire 499",
		"GET unmatched 404",
		"other unmatched 405",
		"GET /v1/watch 101", // reported when the watch ends
	}
	dlmtest.Eventually(t, "the watch is reported", func() bool { return len(o.list()) >= len(want) })
	if diff := cmp.Diff(o.list(), want); diff != "" {
		t.Errorf("observations (-got +want):\n%s", diff)
	}
}

// leaveQueue queues a blocking acquire on name and gives up on it once it
// has queued, as a client whose context ends does.
func leaveQueue(t *testing.T, s *testserver.Server, name string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/v1/locks/"+name+"/acquire", strings.NewReader(`{"holder_id":"quitter","wait_ms":60000}`))
	req.Header.Set("Authorization", "Bearer "+s.TenantKey)
	gone := make(chan error, 1)
	go func() {
		resp, err := httpClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gone <- err
	}()
	// Poll the engine, not the API, so that only the acquire is observed.
	dlmtest.Eventually(t, "the waiter to queue", func() bool {
		v, err := s.Engine.Inspect(t.Context(), dlm.Key{Namespace: "default", Name: name})
		return err == nil && len(v.Waiters) == 1
	})
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("the abandoned request succeeded")
	}
}
