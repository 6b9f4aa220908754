package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// eventServer is a stand-in for GET /v1/watch that sends n events and then
// closes the connection with a compacted reason, so that dlm watch ends.
func eventServer(t *testing.T, n int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/watch" || r.URL.Query().Get("prefix") != "jobs/" {
			http.Error(w, "unexpected request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		for i := 1; i <= n; i++ {
			e := eventJSON{ID: int64(i), Type: []string{"acquired", "released"}[i%2], Name: "jobs/a", Scope: "tenant",
				HolderID: "worker-7", Mode: "exclusive", FencingToken: 3, At: time.Date(2026, 11, 26, 10, 0, i, 0, time.UTC)}
			b, _ := json.Marshal(e)
			if err := conn.Write(r.Context(), websocket.MessageText, b); err != nil {
				return
			}
		}
		conn.Close(websocket.StatusPolicyViolation, "compacted")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestWatchPrintsOneLinePerEvent(t *testing.T) {
	srv := eventServer(t, 2)
	env := map[string]string{"DLM_URL": srv.URL, "DLM_KEY": "k"}
	r := runMain(t, env, "watch", "--prefix", "jobs/")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "#1  released") || !strings.Contains(lines[1], "#2  acquired") ||
		!strings.Contains(lines[1], "jobs/a  by worker-7 (exclusive) token 3") {
		t.Errorf("watch printed:\n%s", r.stdout)
	}
	if r.code != exitError || !strings.Contains(r.stderr, "compacted") {
		t.Errorf("exit %d, stderr %q; want the compacted error", r.code, r.stderr)
	}

	r = runMain(t, env, "watch", "--json", "--prefix", "jobs/")
	lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
	for i, l := range lines {
		var e eventJSON
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.ID != int64(i+1) || e.Name != "jobs/a" {
			t.Errorf("line %d = %q: %v", i, l, err)
		}
	}
	if len(lines) != 2 {
		t.Errorf("--json printed %d lines, want 2:\n%s", len(lines), r.stdout)
	}
}
