package linearize_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/dlmhq/dlm/linearize"
)

// sessionTarget is a session client of s through url (nil: directly).
func (s *server) sessionTarget(url func() string) *linearize.SessionTarget {
	if url == nil {
		url = s.URL
	}
	return &linearize.SessionTarget{
		URL: url, Key: s.tenantKey(), AdminKey: adminKey, Tenant: "default",
		Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
}

// TestSessionLinearizable: the workload's clients share one session, many
// operations in flight on it at once, answered in completion order.
func TestSessionLinearizable(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tgt := s.sessionTarget(nil)
	defer tgt.Close()
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 8, Ops: 150, Wait: true, Force: true, Seed: 41}
	st := w.Run(t.Context(), tgt, rec)
	t.Logf("workload: %v", st)
	if st.Unknown.Load() != 0 {
		t.Errorf("%d operations got no answer from a healthy server", st.Unknown.Load())
	}
	mustCheck(t, "session", rec.Ops())
}

// TestSessionConnectionCuts is TestConnectionCuts over a session: the proxy
// cuts the session's connection mid-flight, failing every operation on it;
// the clients retry with the same input on the next connection.
func TestSessionConnectionCuts(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	p := newCutProxy(t, func() string { return s.addr }, 0.03, 0.05, 43)
	tgt := s.sessionTarget(p.URL)
	defer tgt.Close()
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 6, Ops: 150, Wait: true, Seed: 44, Retries: 100, RetryDelay: 5 * time.Millisecond}
	st := w.Run(t.Context(), tgt, rec)
	t.Logf("workload: %v; proxy cut %d connections", st, p.cuts.Load())
	if p.cuts.Load() == 0 || st.Unknown.Load() == 0 {
		t.Errorf("no connection was cut mid-flight: the test tested nothing")
	}
	if st.GaveUp.Load() > 0 {
		t.Errorf("%d operations were abandoned after %d retries", st.GaveUp.Load(), w.Retries)
	}
	mustCheck(t, "session-cuts", rec.Ops())
	checkEventLog(t, s, rec.Ops())
	for _, name := range []string{"lin/a", "lin/b"} {
		out := s.target(nil).Do(t.Context(), linearize.Input{Kind: linearize.Inspect, Name: name})
		if len(out.Holders) != 0 {
			t.Errorf("%s still held after every client released: %+v", name, out.Holders)
		}
	}
}

// TestSessionLinearizableFeatures: semaphores and multi-lock acquires (the
// session's acquire_many), blocking and not, among waits and
// force-releases.
func TestSessionLinearizableFeatures(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tgt := s.sessionTarget(nil)
	defer tgt.Close()
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 8, Ops: 150, Limit: 2, Multi: true, Wait: true, Force: true, Locks: []string{"lin/a", "lin/b", "lin/c"}, Seed: 45}
	st := w.Run(t.Context(), tgt, rec)
	t.Logf("workload: %v", st)
	if st.Unknown.Load() != 0 {
		t.Errorf("%d operations got no answer from a healthy server", st.Unknown.Load())
	}
	mustCheck(t, "session-features", rec.Ops())
}
