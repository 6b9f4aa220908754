package linearize_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/linearize"
)

// faultLog counts the faults a test injected, for RELIABILITY.md.
func faultLog(t *testing.T, kind string, n int) {
	t.Logf("FAULTS %s: %d", kind, n)
}

// do performs one operation outside the workload, recorded in rec.
func do(ctx context.Context, rec *linearize.Recorder, tgt linearize.Target, in linearize.Input) linearize.Output {
	c := rec.Begin(in)
	out := tgt.Do(ctx, in)
	c.End(out)
	return out
}

// sentinel is a lease acknowledged before a fault that must survive it.
type sentinel struct {
	name  string
	lease string
	token int64
}

// checkSentinels asserts that every acknowledged lease is still held: renew
// answers OK with the same token, and an acquire by anybody else conflicts.
// The operations go into rec, so the model checks them too.
func checkSentinels(t *testing.T, ctx context.Context, rec *linearize.Recorder, tgt linearize.Target, ss []sentinel, after string) {
	t.Helper()
	for _, s := range ss {
		out := retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.Renew, Client: 90, Name: s.name, LeaseID: s.lease})
		if out.Code != "" || out.Token != s.token {
			t.Errorf("after %s: acknowledged lease on %s (t%d) not held: renew answered %v", after, s.name, s.token, out)
		}
		out = retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.AcquireTry, Client: 91, Name: s.name, Holder: "intruder", Mode: dlm.Exclusive, TTL: time.Minute, IdemKey: fmt.Sprintf("intruder-%s-%d", s.name, time.Now().UnixNano())})
		if out.Code != dlm.CodeLockConflict {
			t.Errorf("after %s: acquire of %s, held by an acknowledged lease, answered %v", after, s.name, out)
		}
	}
}

// retryUnknown repeats in until it gets an answer (the server may be
// restarting).
func retryUnknown(ctx context.Context, rec *linearize.Recorder, tgt linearize.Target, in linearize.Input) linearize.Output {
	for i := 0; ; i++ {
		out := do(ctx, rec, tgt, in)
		if !out.Unknown || i == 100 || ctx.Err() != nil {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKillRestartEmbedded SIGKILLs `dlm serve` three times while clients
// run, and starts it again on the same data directory each time. Every
// operation, including those cut off by the kills (unknown outcomes), is
// checked for linearizability; leases acknowledged before each kill must be
// held after every restart; tokens must continue above the high-water mark.
func TestKillRestartEmbedded(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tgt := s.target(nil)
	ctx := t.Context()
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 6, Ops: 150, Wait: true, Seed: 21, Retries: 200, RetryDelay: 10 * time.Millisecond}
	done := make(chan *linearize.Stats, 1)
	go func() { done <- w.Run(ctx, tgt, rec) }()

	const kills = 3
	total := w.Clients * w.Ops
	var sentinels []sentinel
	killed := 0
	for i := range kills {
		if !waitOpsOrDone(t, rec, (i+1)*total/(kills+2), done) {
			break
		}
		name := fmt.Sprintf("sentinel/%d", i)
		out := retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.AcquireTry, Client: 90, Name: name, Holder: "sentinel", Mode: dlm.Exclusive, TTL: 10 * time.Minute, IdemKey: "sentinel-" + name})
		if out.Code != "" || out.Unknown {
			t.Fatalf("sentinel acquire: %v", out)
		}
		sentinels = append(sentinels, sentinel{name, out.Lease, out.Token})
		s.kill()
		killed++
		s.start()
		checkSentinels(t, ctx, rec, tgt, sentinels, fmt.Sprintf("kill %d", killed))
	}
	var st *linearize.Stats
	select {
	case st = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the workload did not finish within 2 minutes")
	}
	for _, sn := range sentinels {
		retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.Release, Client: 90, Name: sn.name, LeaseID: sn.lease})
	}
	t.Logf("workload: %v", st)
	faultLog(t, "sigkill-embedded", killed)
	if killed < 2 {
		t.Errorf("only %d kills happened before the workload ended", killed)
	}
	res := mustCheck(t, "kill-embedded", rec.Ops())
	checkEventLog(t, s, rec.Ops())
	if res.Unknown == 0 {
		t.Logf("note: no operation was cut off by the kills this time")
	}
}

// waitOpsOrDone waits until rec holds n operations, or reports false if
// the workload ended first (the Stats are put back in done).
func waitOpsOrDone(t *testing.T, rec *linearize.Recorder, n int, done chan *linearize.Stats) bool {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for rec.Len() < n {
		select {
		case st := <-done:
			done <- st
			return false
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the workload made no progress: %d operations after 60s, waiting for %d", rec.Len(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestConnectionCuts runs the clients through a proxy that cuts
// connections mid-request: after a request was forwarded (it happens, its
// answer is lost) and before an answer is forwarded. Clients retry
// unanswered operations with the same input (the same idempotency key), so
// every lease ends up released; the history must be linearizable.
func TestConnectionCuts(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	p := newCutProxy(t, func() string { return s.addr }, 0.03, 0.05, 31)
	tgt := s.target(p.URL)
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 6, Ops: 150, Wait: true, Seed: 32, Retries: 100, RetryDelay: 5 * time.Millisecond}
	st := w.Run(t.Context(), tgt, rec)
	t.Logf("workload: %v; proxy cut %d connections", st, p.cuts.Load())
	faultLog(t, "connection-cuts", int(p.cuts.Load()))
	if p.cuts.Load() == 0 || st.Unknown.Load() == 0 {
		t.Errorf("no connection was cut mid-request: the test tested nothing")
	}
	if st.GaveUp.Load() > 0 {
		t.Errorf("%d operations were abandoned after %d retries", st.GaveUp.Load(), w.Retries)
	}
	mustCheck(t, "cuts", rec.Ops())
	checkEventLog(t, s, rec.Ops())
	// Nothing may be left held: every lease was released, through retries.
	for _, name := range []string{"lin/a", "lin/b"} {
		out := s.target(nil).Do(t.Context(), linearize.Input{Kind: linearize.Inspect, Name: name})
		if len(out.Holders) != 0 {
			t.Errorf("%s still held after every client released: %+v", name, out.Holders)
		}
	}
}

// sqliteFiles are the files of the embedded store that SQLite writes
// without fsync (synchronous=NORMAL): a power cut may lose whatever reached
// them since they were last synced. The commit log (dlm.db.commitlog) is
// fdatasynced on every batch and is kept.
var sqliteFiles = []string{"dlm.db", "dlm.db-wal", "dlm.db-shm"}

// snapshot copies the SQLite files of a stopped server.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	img := map[string][]byte{}
	for _, f := range sqliteFiles {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		img[f] = b
	}
	if img["dlm.db"] == nil {
		t.Fatalf("no dlm.db in %s", dir)
	}
	return img
}

// restore puts the SQLite files of a stopped server back as they were in
// img: the writes SQLite made since are lost, as in a power cut before the
// OS wrote them back. The shared-memory index is rebuilt from the log.
func restore(t *testing.T, dir string, img map[string][]byte) {
	t.Helper()
	for _, f := range sqliteFiles {
		p := filepath.Join(dir, f)
		if b, ok := img[f]; ok && f != "dlm.db-shm" {
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// TestPowerLossEmbedded simulates a power cut: the server is SIGKILLed and
// its SQLite files are put back as they were when last synced, so that
// every SQLite commit since is lost and only the fdatasynced commit log
// remains. Every acknowledged grant, renewal and release must come back from
// it: the clients' whole history, across the cut, must be linearizable, and
// leases acknowledged before the cut must be held after it.
func TestPowerLossEmbedded(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	// The start made the keys and synced. Restart once more so that the
	// files are exactly the synced state of a start with an empty log, and
	// take the image while nothing runs.
	s.kill()
	s.start()
	s.kill()
	img := snapshot(t, s.dataDir)
	s.start()

	tgt := s.target(nil)
	ctx := t.Context()
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 6, Ops: 150, Wait: true, Seed: 41, Retries: 200, RetryDelay: 10 * time.Millisecond}
	done := make(chan *linearize.Stats, 1)
	go func() { done <- w.Run(ctx, tgt, rec) }()

	cut := false
	var sentinels []sentinel
	if waitOpsOrDone(t, rec, w.Clients*w.Ops/2, done) {
		for i := range 3 {
			name := fmt.Sprintf("power/%d", i)
			out := retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.AcquireTry, Client: 90, Name: name, Holder: "sentinel", Mode: dlm.Exclusive, TTL: 10 * time.Minute, IdemKey: "power-" + name})
			if out.Code != "" || out.Unknown {
				t.Fatalf("sentinel acquire: %v", out)
			}
			sentinels = append(sentinels, sentinel{name, out.Lease, out.Token})
		}
		// One sentinel is renewed and one released before the cut: both
		// must survive it as acknowledged.
		retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.Renew, Client: 90, Name: sentinels[1].name, LeaseID: sentinels[1].lease})
		retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.Release, Client: 90, Name: sentinels[2].name, LeaseID: sentinels[2].lease})
		s.kill()
		restore(t, s.dataDir, img)
		s.start()
		cut = true
		checkSentinels(t, ctx, rec, tgt, sentinels[:2], "the power cut")
		out := retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.Renew, Client: 90, Name: sentinels[2].name, LeaseID: sentinels[2].lease})
		if out.Code != dlm.CodeLeaseEnded || out.Reason != "released" {
			t.Errorf("lease released before the power cut: renew answered %v, want lease_ended (released)", out)
		}
	}
	var st *linearize.Stats
	select {
	case st = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the workload did not finish within 2 minutes")
	}
	for _, sn := range sentinels[:2] {
		retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.Release, Client: 90, Name: sn.name, LeaseID: sn.lease})
	}
	t.Logf("workload: %v", st)
	if !cut {
		t.Fatal("the workload ended before the power cut")
	}
	faultLog(t, "power-cut-embedded", 1)
	mustCheck(t, "power-cut", rec.Ops())
	checkEventLog(t, s, rec.Ops())
}

// logEvent is the part of an event the checks read.
type logEvent struct {
	ID           int64  `json:"id"`
	Type         string `json:"type"`
	Name         string `json:"name"`
	FencingToken int64  `json:"fencing_token"`
}

// readEventLog reads the whole audit log (GET /v1/events) from s.
func readEventLog(t *testing.T, s *server) []logEvent {
	t.Helper()
	var log []logEvent
	for since := int64(0); ; {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", fmt.Sprintf("%s/v1/events?since=%d&limit=1000", s.URL(), since), nil)
		req.Header.Set("Authorization", "Bearer "+s.tenantKey())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("reading the event log: %v", err)
		}
		var page struct {
			Events    []logEvent `json:"events"`
			NextSince int64      `json:"next_since"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("reading the event log: %d %v", resp.StatusCode, err)
		}
		log = append(log, page.Events...)
		if len(page.Events) == 0 {
			return log
		}
		since = page.NextSince
	}
}

// checkEventLog reads the whole audit log and holds it to what the clients
// were answered: ids strictly increase; every acknowledged grant has
// exactly one acquired event with its token on its lock, and every
// acknowledged release a released event; acquired tokens of a lock increase
// in log order. Faults may have cut answers off (the log may hold more than
// was acknowledged), never acknowledged work out of the log. It returns the
// log.
func checkEventLog(t *testing.T, s *server, ops []linearize.Op) []logEvent {
	t.Helper()
	log := readEventLog(t, s)
	type key struct {
		name  string
		token int64
	}
	acquired, released := map[key]int{}, map[key]int{}
	lastToken := map[string]int64{}
	for i, e := range log {
		if i > 0 && e.ID <= log[i-1].ID {
			t.Errorf("event log: id %d after %d", e.ID, log[i-1].ID)
		}
		k := key{e.Name, e.FencingToken}
		switch e.Type {
		case "acquired":
			acquired[k]++
			if e.FencingToken <= lastToken[e.Name] {
				t.Errorf("event log: %s acquired with token %d after %d", e.Name, e.FencingToken, lastToken[e.Name])
			}
			lastToken[e.Name] = e.FencingToken
		case "released":
			released[k]++
		}
	}
	grants, releases := 0, 0
	for _, op := range ops {
		if op.Unknown || op.Code != "" {
			continue
		}
		k := key{op.Name, op.Token}
		switch op.Kind {
		case linearize.AcquireTry, linearize.AcquireWait:
			grants++
			if acquired[k] != 1 {
				t.Errorf("event log: %d acquired events for the acknowledged grant of %s token %d", acquired[k], op.Name, op.Token)
			}
		case linearize.Release:
			releases++
			if released[k] != 1 {
				t.Errorf("event log: %d released events for the acknowledged release of %s token %d", released[k], op.Name, op.Token)
			}
		}
	}
	t.Logf("event log: %d events hold the %d acknowledged grants and %d releases", len(log), grants, releases)
	return log
}
