package linearize_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dlmhq/dlm/dlmtest"
)

// clusterWatcher follows the event log from its start over /v1/watch, on
// one instance of a cluster and, whenever its connection breaks (the
// instance was killed), on the next one, resuming after the last id it
// read. What it reads must be the log itself: no gap, no repeat, ids only
// growing, whichever instances served it.
type clusterWatcher struct {
	mu         sync.Mutex
	ids        []int64
	reconnects int
	bad        string // the first message that was not an event
}

func watchCluster(ctx context.Context, servers []*server, first int) *clusterWatcher {
	w := &clusterWatcher{}
	go func() {
		for i := first; ctx.Err() == nil; i++ {
			s := servers[i%len(servers)]
			w.follow(ctx, s)
			if ctx.Err() == nil {
				w.mu.Lock()
				w.reconnects++
				w.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond): // an instance coming back
				}
			}
		}
	}()
	return w
}

// follow reads events from one instance until the connection ends.
func (w *clusterWatcher) follow(ctx context.Context, s *server) {
	w.mu.Lock()
	var since int64
	if n := len(w.ids); n > 0 {
		since = w.ids[n-1]
	}
	w.mu.Unlock()
	url := "ws" + strings.TrimPrefix(s.URL(), "http") + fmt.Sprintf("/v1/watch?since=%d", since)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + s.tenantKey()}}})
	cancel()
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		var e logEvent
		w.mu.Lock()
		if json.Unmarshal(b, &e) != nil || e.ID == 0 {
			if w.bad == "" {
				w.bad = string(b)
			}
		} else {
			w.ids = append(w.ids, e.ID)
		}
		w.mu.Unlock()
	}
}

func (w *clusterWatcher) last() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.ids) == 0 {
		return 0
	}
	return w.ids[len(w.ids)-1]
}

// checkWatchers waits until every watcher has read up to the end of log,
// then holds what each read to the log's ids.
func checkWatchers(t *testing.T, log []logEvent, watchers []*clusterWatcher) {
	t.Helper()
	want := make([]int64, len(log))
	for i, e := range log {
		want[i] = e.ID
	}
	end := int64(0)
	if len(want) > 0 {
		end = want[len(want)-1]
	}
	for i, w := range watchers {
		dlmtest.Eventually(t, fmt.Sprintf("watcher %d reads up to event %d", i, end), func() bool { return w.last() >= end })
		w.mu.Lock()
		got, reconnects, bad := slices.Clone(w.ids), w.reconnects, w.bad
		w.mu.Unlock()
		if bad != "" {
			t.Errorf("watcher %d: a message that is not an event: %q", i, bad)
		}
		if len(got) > len(want) {
			got = got[:len(want)] // events after the log was read
		}
		if !slices.Equal(got, want) {
			t.Errorf("watcher %d (%d reconnects) read %d ids, the log holds %d: first difference at %s", i, reconnects, len(got), len(want), firstDiff(got, want))
			continue
		}
		t.Logf("watcher %d read the log's %d events in order across %d reconnects", i, len(got), reconnects)
	}
}

func firstDiff(a, b []int64) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("index %d: %d, log %d", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("index %d (one ends)", min(len(a), len(b)))
}
