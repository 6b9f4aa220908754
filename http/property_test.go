package dlmhttp_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// hold is one grant as a client saw it. The interval [granted, until) is
// conservative: the lease was certainly held during it, whatever the server
// did. It was granted before the response arrived (granted), it expires no
// earlier than ttl after the request was sent, and it is released no earlier
// than the release request was sent.
type hold struct {
	name    string
	shared  bool
	token   int64
	sent    time.Time // acquire request sent
	granted time.Time // acquire response received
	until   time.Time // min(release request sent, sent+ttl)
}

// TestPropertyNoConflictingOverlap runs many clients acquiring and releasing
// a few locks through the HTTP API with random modes, holds, TTLs and waits,
// then checks from their own records that no conflicting holds overlapped
// and that tokens grew with grant order.
func TestPropertyNoConflictingOverlap(t *testing.T) {
	s := testserver.New(t, nil)
	run := 3 * time.Second
	if testing.Short() {
		run = time.Second
	}
	const clients = 16
	names := []string{"p0", "p1", "p2", "p3", "p4", "p5"}
	var (
		mu    sync.Mutex
		holds []hold
		errs  []string
		wg    sync.WaitGroup
	)
	// Run for at least run and until minGrants were made, but never longer
	// than maxRun: a slow machine (or -race) makes fewer grants per second.
	const minGrants, maxRun = 100, 15 * time.Second
	start := time.Now()
	var refused int
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		d := time.Since(start)
		return d >= maxRun || d >= run && len(holds) >= minGrants
	}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			for !done() {
				h, err := randomHold(s, rng, names, c)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err.Error())
				case h == nil:
					refused++
				default:
					holds = append(holds, *h)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		t.Error(e)
	}
	if len(holds) < 20 {
		t.Fatalf("only %d grants: the test exercised nothing", len(holds))
	}
	byName := map[string][]hold{}
	for _, h := range holds {
		byName[h.name] = append(byName[h.name], h)
	}
	for name, hs := range byName {
		sort.Slice(hs, func(i, j int) bool { return hs[i].token < hs[j].token })
		for i := range hs {
			if i > 0 && hs[i].token == hs[i-1].token {
				t.Errorf("%s: token %d granted twice", name, hs[i].token)
			}
			for j := range hs {
				a, b := hs[i], hs[j]
				if i == j {
					continue
				}
				if (!a.shared || !b.shared) && a.granted.Before(b.until) && b.granted.Before(a.until) {
					t.Errorf("%s: conflicting holds overlapped: %+v and %+v", name, a, b)
				}
				// a was granted before b was asked for: a's token is lower.
				if !a.granted.After(b.sent) && a.token >= b.token {
					t.Errorf("%s: token %d granted before token %d was requested", name, a.token, b.token)
				}
			}
		}
	}
	t.Logf("%d grants and %d refusals on %d locks by %d clients in %v", len(holds), refused, len(byName), clients, time.Since(start).Round(time.Millisecond))
}

// randomHold acquires a random lock with random options, holds it a random
// time and releases it. It returns nil and no error when the acquire was
// refused with a conflict or a timeout.
func randomHold(s *testserver.Server, rng *rand.Rand, names []string, c int) (*hold, error) {
	name := names[rng.IntN(len(names))]
	shared := rng.IntN(3) == 0
	ttl := time.Duration(500+rng.IntN(1000)) * time.Millisecond
	holdFor := time.Duration(rng.IntN(15)) * time.Millisecond
	if rng.IntN(20) == 0 {
		// Sometimes hold past the TTL, so expiry hands the lock on.
		ttl, holdFor = 100*time.Millisecond, time.Duration(100+rng.IntN(100))*time.Millisecond
	}
	wait := 0
	if rng.IntN(2) == 0 {
		wait = 50 + rng.IntN(300)
	}
	mode := "exclusive"
	if shared {
		mode = "shared"
	}
	body := map[string]any{"holder_id": fmt.Sprintf("client-%d", c), "mode": mode, "ttl_ms": ttl.Milliseconds(), "wait_ms": wait}
	sent := time.Now()
	status, resp, err := post(s, "POST", "/v1/locks/"+name+"/acquire", body)
	granted := time.Now()
	if err != nil {
		return nil, err
	}
	if status == 409 {
		return nil, nil
	}
	if status != 200 {
		return nil, fmt.Errorf("acquire %s: %d %s", name, status, resp)
	}
	var l struct {
		LeaseID string `json:"lease_id"`
		Token   int64  `json:"fencing_token"`
	}
	if err := json.Unmarshal(resp, &l); err != nil {
		return nil, err
	}
	time.Sleep(holdFor) // stands for work done under the lock; asserts nothing
	until := time.Now()
	status, resp, err = post(s, "DELETE", "/v1/leases/"+l.LeaseID, nil)
	if err != nil {
		return nil, err
	}
	if status != 200 && status != 410 {
		return nil, fmt.Errorf("release %s: %d %s", name, status, resp)
	}
	if exp := sent.Add(ttl); exp.Before(until) {
		until = exp
	}
	return &hold{name: name, shared: shared, token: l.Token, sent: sent, granted: granted, until: until}, nil
}

func post(s *testserver.Server, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.TenantKey)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
