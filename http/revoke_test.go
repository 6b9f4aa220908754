package dlmhttp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// Revoking a key closes its open watches and sessions (1008, reason
// unauthenticated) and answers its queued acquires 401; none of them is
// granted afterwards.
func TestRevocationEndsWatchesAndWaits(t *testing.T) {
	s := testserver.New(t, nil)
	admin := adminAPI(t, s)
	created := admin.must(201, "POST", "/v1/tenants", map[string]any{"name": "rv"})
	key, keyID := created["api_key"].(string), created["key_id"].(string)
	a := &api{t, s.URL, key}
	held := a.acquire("r", "first", nil)

	c := dial(t, s, key, "")
	sn := dialSession(t, s.URL, key)
	queued := make(chan *response, 1)
	go func() {
		queued <- a.do("POST", "/v1/locks/r/acquire", map[string]any{"holder_id": "queued", "wait_ms": 240_000})
	}()
	dlmtest.Eventually(t, "the acquire is queued", func() bool {
		w, _ := a.must(200, "GET", "/v1/locks/r", nil)["waiters"].([]any)
		return len(w) == 1
	})

	admin.must(204, "DELETE", "/v1/tenants/rv/keys/"+keyID, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var err error
	for err == nil {
		_, _, err = c.Read(ctx) // the "waiting" event, then the close
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.HasPrefix(ce.Reason, "unauthenticated") {
		t.Errorf("the watch ended with %v; want close 1008 with reason unauthenticated", err)
	}
	// And its session.
	select {
	case <-sn.closed:
	case <-ctx.Done():
		t.Fatal("the session is still open after the revocation")
	}
	if !errors.As(sn.err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.HasPrefix(ce.Reason, "unauthenticated") {
		t.Errorf("the session ended with %v; want close 1008 with reason unauthenticated", sn.err)
	}
	if r := <-queued; r.status != 401 || r.errorCode(t) != "unauthenticated" {
		t.Errorf("the queued acquire = %d %s; want 401 unauthenticated", r.status, r.body)
	}
	// The lock's holder releases through the admin: nobody is granted.
	admin.must(200, "POST", "/v1/locks/r/force-release?tenant=rv", nil)
	v := admin.must(200, "GET", "/v1/locks/r?tenant=rv", nil)
	if h, _ := v["holders"].([]any); len(h) != 0 {
		t.Errorf("after the force-release the lock is held: %v (first held %v)", h, held["lease_id"])
	}
}
