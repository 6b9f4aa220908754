package postgres_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/postgres"
)

// localCluster returns the version of the local PostgreSQL cluster that
// pg_ctlcluster manages, for tests that stop and start the server. They run
// only when DLM_TEST_PG_RESTART is set: stopping the server would break
// whoever else uses it, including the other test packages that go test runs
// at the same time. CI runs them in a step of their own (.ci/run), where a
// missing tool is a failure.
func localCluster(t testing.TB, url string) string {
	t.Helper()
	if os.Getenv("DLM_TEST_PG_RESTART") == "" {
		t.Skip("stops and starts the local PostgreSQL: set DLM_TEST_PG_RESTART=1 to run it (CI does, alone)")
	}
	fail := t.Fatal
	if !strings.Contains(url, "@127.0.0.1:") && !strings.Contains(url, "@localhost:") {
		fail("the PostgreSQL restart test needs the server on this machine")
	}
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil || os.Geteuid() != 0 {
		fail("the PostgreSQL restart test needs pg_ctlcluster and root")
	}
	entries, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(entries) == 0 {
		fail("no PostgreSQL cluster in /etc/postgresql")
	}
	return entries[len(entries)-1].Name()
}

func pgctl(t testing.TB, version, action string) {
	t.Helper()
	args := []string{version, "main", action}
	if action == "stop" {
		args = append(args, "--mode", "fast")
	}
	if out, err := exec.Command("pg_ctlcluster", args...).CombinedOutput(); err != nil {
		t.Logf("pg_ctlcluster %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// pgRunning reports whether the cluster runs (pg_ctlcluster status exits 0).
func pgRunning(version string) bool {
	return exec.Command("pg_ctlcluster", version, "main", "status").Run() == nil
}

// TestPostgresRestartUnderLoad stops PostgreSQL while clients on two
// instances acquire and release, then starts it again. During the outage
// calls fail quickly with unavailable; afterwards the instances recover by
// themselves. No grant is lost (every lease acknowledged before the outage is
// still there to release after it) and no token repeats.
func TestPostgresRestartUnderLoad(t *testing.T) {
	// Instances count as gone 2s after their last heartbeat, and the
	// outage lasts longer than that.
	const deadAfter = 2 * time.Second
	version := localCluster(t, dlmtest.PostgresURL(t))
	c := newClusterWith(t, 2, engine.Options{}, postgres.Options{MaxConns: 8, Heartbeat: 200 * time.Millisecond, DeadAfter: deadAfter})
	t.Cleanup(func() {
		// Whatever happened, leave the server running.
		if !pgRunning(version) {
			pgctl(t, version, "start")
		}
	})
	ctx := t.Context()
	var (
		mu          sync.Mutex
		holds       []hold
		unavailable int
		slowest     time.Duration
		wg          sync.WaitGroup
		stop        = make(chan struct{})
	)
	call := func(fn func() error) error {
		start := time.Now()
		err := fn()
		took := time.Since(start)
		mu.Lock()
		slowest = max(slowest, took)
		if dlm.ErrorCode(err) == dlm.CodeUnavailable {
			unavailable++
		}
		mu.Unlock()
		return err
	}
	for cl := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst := cl % 2
			e := c.engines[inst]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := creq(fmt.Sprintf("r/%d", (cl+i)%8), fmt.Sprint("c", cl), dlm.Exclusive, time.Duration(i%2)*100*time.Millisecond)
				r.TTL = 10 * time.Second // a grant lost to an ambiguous failure blocks only briefly
				var l dlm.Lease
				err := call(func() error {
					var err error
					l, _, err = e.Acquire(ctx, r)
					return err
				})
				if err != nil {
					switch dlm.ErrorCode(err) {
					case dlm.CodeLockConflict, dlm.CodeWaitTimeout:
					case dlm.CodeUnavailable:
						time.Sleep(20 * time.Millisecond)
					default:
						t.Errorf("acquire: %v", err)
						return
					}
					continue
				}
				h := hold{name: r.Key.Name, mode: r.Mode, token: l.Token, instance: inst, start: time.Now()}
				time.Sleep(time.Duration(i%3) * time.Millisecond)
				h.end = time.Now()
				// Release until it is done: the lease must still be there
				// after any outage (it was granted and acknowledged).
				for {
					err := call(func() error { _, err := e.Release(ctx, ctenant, l.ID); return err })
					if err == nil {
						break
					}
					if dlm.ErrorCode(err) != dlm.CodeUnavailable {
						// lease_ended after an ambiguous release that did
						// commit is fine, and so is a lease that ran out
						// while the database was down; anything else is a
						// lost grant.
						var de *dlm.Error
						switch {
						case errors.As(err, &de) && de.Code == dlm.CodeLeaseEnded && de.Reason == dlm.Released:
						case errors.As(err, &de) && de.Code == dlm.CodeLeaseEnded && de.Reason == dlm.Expired && !time.Now().Before(l.ExpiresAt):
							h.end = l.ExpiresAt
						default:
							t.Errorf("release of token %d on %s: %v", l.Token, r.Key.Name, err)
						}
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				holds = append(holds, h)
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(holds)
	}
	// A waiter parked through the outage, longer than instances take to
	// count as gone: it must not be dropped as dead.
	held, _, err := c.engines[0].Acquire(ctx, creq("parked", "holder", dlm.Exclusive, 0))
	if err != nil {
		t.Fatal(err)
	}
	parked := make(chan error, 1)
	go func() {
		_, _, err := c.engines[1].Acquire(ctx, creq("parked", "waiter", dlm.Exclusive, time.Minute))
		parked <- err
	}()
	dlmtest.Eventually(t, "the waiter queues", func() bool {
		v, err := c.engines[0].Inspect(ctx, ckey("parked"))
		return err == nil && len(v.Waiters) == 1
	})
	dlmtest.Eventually(t, "the load runs", func() bool { return count() > 20 })
	pgctl(t, version, "stop")
	t.Log("PostgreSQL stopped")
	dlmtest.Eventually(t, "calls fail with unavailable", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return unavailable > 10
	})
	before := count()
	time.Sleep(deadAfter + time.Second) // an outage longer than deadAfter, under load
	pgctl(t, version, "start")
	t.Log("PostgreSQL started")
	deadline := time.Now().Add(30 * time.Second)
	for count() < before+20 {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %d holds before the restart, %d 30s after", before, count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// After the outage (and past DeadAfter) the parked waiter is still
	// queued, and gets the lock when the holder lets go.
	if v, err := c.engines[0].Inspect(ctx, ckey("parked")); err != nil || len(v.Waiters) != 1 {
		t.Errorf("after the outage the parked waiter is gone: %+v, %v", v, err)
	}
	for {
		_, err := c.engines[0].Release(ctx, ctenant, held.ID)
		if dlm.ErrorCode(err) != dlm.CodeUnavailable {
			if err != nil {
				t.Errorf("release of the held lock: %v", err)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-parked:
		if err != nil {
			t.Errorf("the waiter parked through the outage: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("the waiter parked through the outage was not granted")
	}
	checkHolds(t, holds)
	checkUsage(t, c.url, c.schema)
	t.Logf("%d holds, %d unavailable answers, slowest call %v", len(holds), unavailable, slowest)
	if slowest > 10*time.Second {
		t.Errorf("a call took %v: calls must fail fast while the database is down", slowest)
	}
}
