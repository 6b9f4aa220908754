package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
)

// The tests in this file run real `dlm serve --postgres` processes, three
// instances of a cluster on one fresh schema, and talk to them over HTTP.

// instance is one running dlm serve process of a cluster.
type instance struct {
	*dlmtest.Server
	name string // a, b, c: for failure messages
}

// serveCluster starts n instances on a fresh schema and returns them with the
// default tenant's API key, read from the first instance's data directory.
func serveCluster(t testing.TB, n int) (insts []*instance, key, pgURL string) {
	return serveClusterVia(t, n, "")
}

// serveClusterVia is serveCluster with the instances reaching PostgreSQL at
// addr (host:port), a proxy in front of it, unless addr is "".
func serveClusterVia(t testing.TB, n int, addr string) (insts []*instance, key, pgURL string) {
	t.Helper()
	base, schema := freshSchema(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		u.Host = addr
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", schema) // what BenchmarkClusterScaling samples
	u.RawQuery = q.Encode()
	for i := range n {
		s := dlmtest.MustServe(t, dlmtest.ServeOptions{Args: []string{"--postgres", u.String()}, Env: []string{"DLM_POSTGRES_URL="}})
		insts = append(insts, &instance{Server: s, name: string(rune('a' + i))})
	}
	return insts, dlmtest.Credentials(t, insts[0].Dir).TenantKey, u.String()
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

// apiLease is the part of a lease object the tests use.
type apiLease struct {
	ID         string    `json:"lease_id"`
	HolderID   string    `json:"holder_id"`
	Token      int64     `json:"fencing_token"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Details struct {
			Reason string `json:"reason"`
		} `json:"details"`
	} `json:"error"`
}

// do sends a request and decodes the answer into out (on 2xx) and returns the
// status and the error code (on others). A transport error is status 0.
func do(key, method, url string, body any, out any) (int, string) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 {
		if out != nil {
			json.Unmarshal(b, out)
		}
		return resp.StatusCode, ""
	}
	var e apiError
	json.Unmarshal(b, &e)
	if e.Error.Details.Reason != "" {
		return resp.StatusCode, e.Error.Code + ":" + e.Error.Details.Reason
	}
	return resp.StatusCode, e.Error.Code
}

func (in *instance) acquire(key, name, holder string, ttl, wait time.Duration) (apiLease, int, string) {
	var l apiLease
	status, code := do(key, "POST", in.URL+"/v1/locks/"+url.PathEscape(name)+"/acquire",
		map[string]any{"holder_id": holder, "ttl_ms": ttl.Milliseconds(), "wait_ms": wait.Milliseconds()}, &l)
	return l, status, code
}

func (in *instance) release(key, id string) (int, string) {
	return do(key, "DELETE", in.URL+"/v1/leases/"+id, nil, nil)
}

func (in *instance) waiters(t testing.TB, key, name string) int {
	t.Helper()
	var v struct {
		Waiters []any `json:"waiters"`
	}
	if status, code := do(key, "GET", in.URL+"/v1/locks/"+url.PathEscape(name), nil, &v); status != 200 {
		t.Fatalf("inspect %s: %d %s", name, status, code)
	}
	return len(v.Waiters)
}

// load runs clients on insts until stop is closed, acquiring (some waiting)
// and releasing exclusive locks on names, and records every hold. A client
// stops when its instance stops answering.
type load struct {
	mu          sync.Mutex
	holds       []hold
	statuses    map[int]int
	unreleased  []unreleased // granted, release unanswered (instance died)
	stop        chan struct{}
	wg          sync.WaitGroup
	releaseLost []string
}

func runLoad(t testing.TB, key string, insts []*instance, clients int, names []string, ttl time.Duration) *load {
	ld := &load{stop: make(chan struct{}), statuses: map[int]int{}}
	for cl := range clients {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			inst := cl % len(insts)
			in := insts[inst]
			for i := 0; ; i++ {
				select {
				case <-ld.stop:
					return
				default:
				}
				name := names[(cl*7+i)%len(names)]
				l, status, code := in.acquire(key, name, fmt.Sprint("c", cl), ttl, time.Duration(i%3)*150*time.Millisecond)
				ld.count(status)
				switch {
				case status == 0:
					return // the instance is gone
				case status == 503:
					time.Sleep(20 * time.Millisecond)
					continue
				case status != 200:
					if code != dlm.CodeLockConflict && code != dlm.CodeWaitTimeout {
						t.Errorf("acquire via %s: %d %s", in.name, status, code)
						return
					}
					continue
				}
				h := hold{name: name, mode: dlm.Exclusive, token: l.Token, instance: inst, start: time.Now()}
				time.Sleep(time.Duration(i%3) * time.Millisecond)
				h.end = time.Now()
				for {
					status, code := in.release(key, l.ID)
					ld.count(status)
					if status == 503 {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					ld.mu.Lock()
					switch {
					case status == 200 || code == dlm.CodeLeaseEnded+":released":
						// lease_ended: a release that failed ambiguously
						// had committed.
						ld.holds = append(ld.holds, h)
					case code == dlm.CodeLeaseEnded+":expired" && !time.Now().Before(l.ExpiresAt):
						// It ran out while the database was down.
						h.end = l.ExpiresAt
						ld.holds = append(ld.holds, h)
					case status == 0:
						// The instance died during the release, which
						// may or may not have happened.
						ld.unreleased = append(ld.unreleased, unreleased{h, l})
					default:
						ld.releaseLost = append(ld.releaseLost, fmt.Sprintf("%s token %d: %d %s", name, l.Token, status, code))
					}
					ld.mu.Unlock()
					break
				}
				if status == 0 {
					return
				}
			}
		}()
	}
	return ld
}

func (ld *load) count(status int) {
	ld.mu.Lock()
	ld.statuses[status]++
	ld.mu.Unlock()
}

func (ld *load) holdCount() int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return len(ld.holds)
}

type unreleased struct {
	hold
	lease apiLease
}

// finish stops the load and returns its holds. A hold whose release went
// unanswered because its instance died ended when the release was sent if
// the release happened, or else it lasted until the lease expired; via asks
// which.
func (ld *load) finish(t testing.TB, key string, via *instance) []hold {
	t.Helper()
	close(ld.stop)
	ld.wg.Wait()
	for _, s := range ld.releaseLost {
		t.Errorf("release failed (a lost grant?): %s", s)
	}
	holds := slices.Clone(ld.holds)
	for _, u := range ld.unreleased {
		dlmtest.Eventually(t, "the dead instance's lease ends", func() bool { return time.Now().After(u.lease.ExpiresAt) })
		status, code := do(key, "GET", via.URL+"/v1/leases/"+u.lease.ID, nil, nil)
		switch code {
		case dlm.CodeLeaseEnded + ":released":
		case dlm.CodeLeaseEnded + ":expired":
			u.end = u.lease.ExpiresAt
		default:
			t.Errorf("lease of token %d on %s after its instance died: %d %s", u.token, u.name, status, code)
		}
		holds = append(holds, u.hold)
	}
	return holds
}

// TestServeCluster runs three instances: exclusion and fencing under load
// across them, then FIFO order across instances and the cross-instance
// grant latency.
func TestServeCluster(t *testing.T) {
	insts, key, _ := serveCluster(t, 3)
	ld := runLoad(t, key, insts, 12, []string{"p/0", "p/1", "p/2"}, time.Minute)
	dlmtest.Eventually(t, "the load runs", func() bool { return ld.holdCount() > 60 })
	holds := ld.finish(t, key, insts[0])
	checkHolds(t, holds)
	t.Logf("%d holds over HTTP on 3 instances; statuses %v", len(holds), ld.statuses)

	first, status, code := insts[0].acquire(key, "fifo", "h", time.Minute, 0)
	if status != 200 {
		t.Fatalf("acquire: %d %s", status, code)
	}
	type result struct {
		lease  apiLease
		at     time.Time
		status int
		code   string
	}
	const n = 6
	via := func(i int) *instance { return insts[(i+1)%len(insts)] }
	chans := make([]chan result, n)
	for i := range n {
		chans[i] = make(chan result, 1)
		go func() {
			l, status, code := via(i).acquire(key, "fifo", fmt.Sprint("w", i), time.Minute, 30*time.Second)
			chans[i] <- result{l, time.Now(), status, code}
		}()
		dlmtest.Eventually(t, fmt.Sprintf("waiter %d queues", i), func() bool { return insts[0].waiters(t, key, "fifo") == i+1 })
	}
	held, heldVia := first, insts[0]
	var latencies []time.Duration
	for i := range n {
		if status, code := heldVia.release(key, held.ID); status != 200 {
			t.Fatalf("release: %d %s", status, code)
		}
		released := time.Now()
		var got result
		select {
		case got = <-chans[i]:
		case <-time.After(20 * time.Second):
			t.Fatalf("waiter %d was not granted", i)
		}
		if want := held.Token + 1; got.status != 200 || got.lease.HolderID != fmt.Sprint("w", i) || !dlmtest.NextToken(held.Token, got.lease.Token) {
			t.Fatalf("grant %d: %d %s %+v, want w%d with token %d", i, got.status, got.code, got.lease, i, want)
		}
		latencies = append(latencies, got.at.Sub(released))
		held, heldVia = got.lease, via(i)
	}
	slices.Sort(latencies)
	t.Logf("cross-instance grant latency over HTTP (release answered .. waiter answered): min %v, median %v, max %v",
		latencies[0], latencies[len(latencies)/2], latencies[len(latencies)-1])
	if worst := latencies[len(latencies)-1]; worst > 5*time.Second {
		t.Errorf("a cross-instance grant took %v", worst)
	}
}

// TestServeClusterSIGKILL kills one of three instances under load. The
// others keep serving; the dead instance's leases stay until they expire,
// its queued waiters are dropped, and no token repeats.
func TestServeClusterSIGKILL(t *testing.T) {
	insts, key, _ := serveCluster(t, 3)
	victim := insts[2]
	// A lock held through A with a waiter parked on the victim.
	ghostHeld, status, code := insts[0].acquire(key, "ghost", "holder", time.Minute, 0)
	if status != 200 {
		t.Fatalf("acquire: %d %s", status, code)
	}
	go victim.acquire(key, "ghost", "ghost", time.Minute, 60*time.Second)
	dlmtest.Eventually(t, "the victim's waiter queues", func() bool { return insts[0].waiters(t, key, "ghost") == 1 })

	names := []string{"k/0", "k/1", "k/2", "k/3"}
	ld := runLoad(t, key, insts, 9, names, 3*time.Second)
	dlmtest.Eventually(t, "the load runs", func() bool { return ld.holdCount() > 50 })
	victim.Kill()
	killed := time.Now()
	t.Log("instance c killed")
	before := ld.holdCount()
	dlmtest.Eventually(t, "the others keep serving", func() bool { return ld.holdCount() > before+60 })
	// The waiter of the dead instance is dropped (after DeadAfter), so it is
	// neither granted nor left blocking the queue.
	dlmtest.Eventually(t, "the dead instance's waiter is dropped", func() bool { return insts[0].waiters(t, key, "ghost") == 0 })
	t.Logf("dead waiter dropped %v after the kill", time.Since(killed))
	if status, code := insts[0].release(key, ghostHeld.ID); status != 200 {
		t.Fatalf("release: %d %s", status, code)
	}
	if _, status, code := insts[1].acquire(key, "ghost", "next", time.Minute, 0); status != 200 {
		t.Errorf("after the holder released, acquire = %d %s: the dead waiter got the lock", status, code)
	}
	holds := ld.finish(t, key, insts[0])
	checkHolds(t, holds)
	t.Logf("%d holds (%d unanswered releases on the dead instance); statuses %v", len(holds), len(ld.unreleased), ld.statuses)
	if ld.statuses[503] > 0 {
		t.Errorf("%d answers 503 from the surviving instances", ld.statuses[503])
	}
}

// TestServeClusterPostgresRestart stops and starts PostgreSQL under load on
// three instances: requests fail with 503 meanwhile, then everything recovers
// by itself; no grant is lost and no token repeats.
func TestServeClusterPostgresRestart(t *testing.T) {
	version := localCluster(t, dlmtest.PostgresURL(t))
	insts, key, _ := serveCluster(t, 3)
	t.Cleanup(func() {
		if !pgRunning(version) {
			pgctl(t, version, "start")
		}
	})
	ld := runLoad(t, key, insts, 9, []string{"r/0", "r/1", "r/2", "r/3", "r/4", "r/5"}, 10*time.Second)
	dlmtest.Eventually(t, "the load runs", func() bool { return ld.holdCount() > 50 })
	pgctl(t, version, "stop")
	t.Log("PostgreSQL stopped")
	dlmtest.Eventually(t, "requests fail with 503", func() bool {
		ld.mu.Lock()
		defer ld.mu.Unlock()
		return ld.statuses[503] > 10
	})
	time.Sleep(time.Second) // an outage of a second or so, under load
	pgctl(t, version, "start")
	t.Log("PostgreSQL started")
	before := ld.holdCount()
	deadline := time.Now().Add(30 * time.Second)
	for ld.holdCount() < before+50 {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %d holds 30s after the restart (%d before)", ld.holdCount(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	holds := ld.finish(t, key, insts[0])
	checkHolds(t, holds)
	t.Logf("%d holds; statuses %v", len(holds), ld.statuses)
	for _, in := range insts {
		status, _ := do(key, "GET", in.URL+"/readyz", nil, nil)
		if status != 200 {
			t.Errorf("instance %s /readyz = %d after recovery", in.name, status)
		}
	}
}

// TestServeClusterWatch: a WebSocket watch on one instance receives the
// events of acquires and releases made through the two others, in ID order,
// exactly as the history has them.
func TestServeClusterWatch(t *testing.T) {
	insts, key, _ := serveCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, insts[2].URL+"/v1/watch?prefix=w/", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + key}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	type event struct {
		ID    int64  `json:"id"`
		Type  string `json:"type"`
		Name  string `json:"name"`
		Token int64  `json:"fencing_token"`
	}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 15 {
				l, status, code := insts[i].acquire(key, fmt.Sprintf("w/%d/%d", i, j%3), "h", time.Minute, 0)
				if status != 200 {
					t.Errorf("acquire: %d %s", status, code)
					return
				}
				if status, code := insts[i].release(key, l.ID); status != 200 {
					t.Errorf("release: %d %s", status, code)
					return
				}
			}
		}()
	}
	wg.Wait()
	var history struct {
		Events []event `json:"events"`
	}
	if status, code := do(key, "GET", insts[0].URL+"/v1/events?prefix=w/&limit=1000", nil, &history); status != 200 {
		t.Fatalf("history: %d %s", status, code)
	}
	if len(history.Events) != 60 {
		t.Fatalf("history has %d events, want 60", len(history.Events))
	}
	for i, want := range history.Events {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("after %d events: %v", i, err)
		}
		var got event
		if err := json.Unmarshal(msg, &got); err != nil {
			t.Fatalf("event %d: %v: %s", i, err, msg)
		}
		if got != want {
			t.Fatalf("watch event %d = %+v, want %+v", i, got, want)
		}
	}
}
