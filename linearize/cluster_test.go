package linearize_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/linearize"
)

// freshDatabase creates an empty database on the server of baseURL for one
// test and drops it at the end; it returns the database's URL.
func freshDatabase(t *testing.T, baseURL string) string {
	t.Helper()
	u, err := url.Parse(baseURL)
	if err != nil {
		t.Fatalf("postgres URL: %v", err)
	}
	name := fmt.Sprintf("dlm_linearize_%d", time.Now().UnixNano())
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, baseURL)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	// The shared server may be restarting under another package's test:
	// try for a while.
	for deadline := time.Now().Add(time.Minute); ; {
		err := exec("CREATE DATABASE " + name)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("creating database %s: %v", name, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Cleanup(func() {
		if err := exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Logf("dropping database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// cluster is three `dlm serve --postgres` instances on one database.
type cluster struct {
	servers []*server
}

func newCluster(t *testing.T, dbURL string, n int) *cluster {
	t.Helper()
	c := &cluster{}
	for i := range n {
		// They start one after the other: the first makes the keys.
		s := newServer(t, "--postgres", dbURL)
		if i > 0 {
			s.key = c.servers[0].tenantKey()
		}
		c.servers = append(c.servers, s)
	}
	return c
}

// target spreads the clients over the instances (client i talks to
// instance i mod n) and fails over to the next instance when its own
// refuses connections (it is down), as a client given every instance's
// address would.
func (c *cluster) target() *clusterTarget {
	ct := &clusterTarget{}
	for _, s := range c.servers {
		ct.targets = append(ct.targets, s.target(nil))
	}
	return ct
}

type clusterTarget struct {
	targets   []*linearize.HTTPTarget
	mu        sync.Mutex
	failovers int
}

func (ct *clusterTarget) Do(ctx context.Context, in linearize.Input) linearize.Output {
	n := len(ct.targets)
	var out linearize.Output
	for i := range n {
		out = ct.targets[(in.Client+i)%n].Do(ctx, in)
		if !out.NotSent {
			return out
		}
		ct.mu.Lock()
		ct.failovers++
		ct.mu.Unlock()
	}
	return out
}

// TestClusterKillInstance runs clients against three instances on one
// PostgreSQL and SIGKILLs one of them twice mid-run (restarting it each
// time). The history across all instances must be linearizable: one lock,
// one token sequence, whichever instance answered; leases acknowledged
// through the killed instance must be held after it died. A watcher per
// instance follows the log throughout, failing over as the clients do, and
// must read it whole, in order, with no repeat.
func TestClusterKillInstance(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t, dlmtest.PostgresURL(t))
	c := newCluster(t, dbURL, 3)
	tgt := c.target()
	ctx := t.Context()
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 6, Ops: 120, Wait: true, MaxWait: 500 * time.Millisecond, Seed: 51, Retries: 200, RetryDelay: 10 * time.Millisecond}
	wctx, stopWatchers := context.WithCancel(ctx)
	defer stopWatchers()
	var watchers []*clusterWatcher
	for i := range c.servers {
		watchers = append(watchers, watchCluster(wctx, c.servers, i))
	}
	done := make(chan *linearize.Stats, 1)
	go func() { done <- w.Run(ctx, tgt, rec) }()

	victim := c.servers[1]
	via := func(s *server) linearize.Target { return s.target(nil) }
	var sentinels []sentinel
	kills := 0
	for i := range 2 {
		if !waitOpsOrDone(t, rec, (i+1)*w.Clients*w.Ops/3, done) {
			break
		}
		name := fmt.Sprintf("cluster-sentinel/%d", i)
		out := retryUnknown(ctx, rec, via(victim), linearize.Input{Kind: linearize.AcquireTry, Client: 90, Name: name, Holder: "sentinel", Mode: dlm.Exclusive, TTL: 10 * time.Minute, IdemKey: "cluster-" + name})
		if out.Code != "" || out.Unknown {
			t.Fatalf("sentinel acquire: %v", out)
		}
		sentinels = append(sentinels, sentinel{name, out.Lease, out.Token})
		victim.kill()
		kills++
		// Held while the instance that granted them is dead.
		checkSentinels(t, ctx, rec, via(c.servers[0]), sentinels, fmt.Sprintf("instance kill %d", kills))
		victim.start()
	}
	st := waitDone(t, done)
	for _, sn := range sentinels {
		retryUnknown(ctx, rec, via(c.servers[2]), linearize.Input{Kind: linearize.Release, Client: 90, Name: sn.name, LeaseID: sn.lease})
	}
	t.Logf("workload: %v; %d failovers to another instance", st, tgt.failovers)
	faultLog(t, "sigkill-cluster-instance", kills)
	if kills < 2 {
		t.Errorf("only %d kills happened before the workload ended", kills)
	}
	mustCheck(t, "cluster-kill", rec.Ops())
	log := checkEventLog(t, c.servers[0], rec.Ops())
	checkWatchers(t, log, watchers)
}

// TestClusterPostgresRestart runs three instances on a PostgreSQL server of
// the test's own, and mid-run restarts it (fast shutdown: connections cut,
// transactions in flight rolled back) and later crashes it (SIGKILL of the
// postmaster: WAL recovery on start). Operations during the outage get 503
// or no answer (unknown outcomes); the history must be linearizable and
// acknowledged leases must survive both.
func TestClusterPostgresRestart(t *testing.T) {
	t.Parallel()
	dlmtest.PostgresURL(t) // the cluster tests run where PostgreSQL is meant to be
	if testing.Short() {
		t.Skip("starts a PostgreSQL server of its own")
	}
	pg := startPrivatePostgres(t)
	c := newCluster(t, pg.URL(), 3)
	tgt := c.target()
	ctx := t.Context()
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 6, Ops: 120, Wait: true, MaxWait: 500 * time.Millisecond, Seed: 61, Retries: 300, RetryDelay: 20 * time.Millisecond}
	done := make(chan *linearize.Stats, 1)
	go func() { done <- w.Run(ctx, tgt, rec) }()

	var sentinels []sentinel
	faults := 0
	for i, fault := range []func(){pg.restart, pg.crash} {
		if !waitOpsOrDone(t, rec, (i+1)*w.Clients*w.Ops/3, done) {
			break
		}
		name := fmt.Sprintf("pg-sentinel/%d", i)
		out := retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.AcquireTry, Client: 90 + i, Name: name, Holder: "sentinel", Mode: dlm.Exclusive, TTL: 10 * time.Minute, IdemKey: "pg-" + name})
		if out.Code != "" || out.Unknown {
			t.Fatalf("sentinel acquire: %v", out)
		}
		sentinels = append(sentinels, sentinel{name, out.Lease, out.Token})
		fault()
		faults++
		checkSentinels(t, ctx, rec, tgt, sentinels, fmt.Sprintf("PostgreSQL fault %d", faults))
	}
	st := waitDone(t, done)
	for _, sn := range sentinels {
		retryUnknown(ctx, rec, tgt, linearize.Input{Kind: linearize.Release, Client: 90, Name: sn.name, LeaseID: sn.lease})
	}
	t.Logf("workload: %v", st)
	faultLog(t, "postgres-restart-and-crash", faults)
	if faults < 2 {
		t.Errorf("only %d PostgreSQL faults happened before the workload ended", faults)
	}
	mustCheck(t, "cluster-pg", rec.Ops())
	checkEventLog(t, c.servers[2], rec.Ops())
}

// waitDone waits for the workload to finish, within a bound.
func waitDone(t *testing.T, done chan *linearize.Stats) *linearize.Stats {
	t.Helper()
	select {
	case st := <-done:
		return st
	case <-time.After(3 * time.Minute):
		t.Fatal("the workload did not finish within 3 minutes")
		return nil
	}
}

// TestClusterExpiryEdges runs the expiry-edge rounds on three instances:
// the holder renews through one, the waiter queues on another, the prober
// inspects and tries through the third. The database's clock decides
// expiry (the deployment model in README); the waiter must be woken across instances.
func TestClusterExpiryEdges(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabase(t, dlmtest.PostgresURL(t))
	c := newCluster(t, dbURL, 3)
	x := linearize.ExpiryEdges{Locks: 3, Rounds: 6, Seed: 81, GrantTarget: 500 * time.Millisecond}
	st, viol := x.Run(t.Context(), c.target())
	t.Logf("expiry edges across instances: %v", st)
	for _, v := range viol {
		t.Error(v)
	}
}

// TestClusterLinearizableFeatures: semaphores and blocking multi-lock
// acquires spread over three instances on one PostgreSQL, so that a group's
// locks are released and granted through different instances.
func TestClusterLinearizableFeatures(t *testing.T) {
	t.Parallel()
	c := newCluster(t, freshDatabase(t, dlmtest.PostgresURL(t)), 3)
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 6, Ops: 100, Limit: 2, Multi: true, Wait: true, Force: true, Locks: []string{"lin/a", "lin/b", "lin/c"}, Seed: 54}
	st := w.Run(t.Context(), c.target(), rec)
	t.Logf("workload: %v", st)
	if st.Unknown.Load() != 0 {
		t.Errorf("%d operations got no answer from a healthy cluster", st.Unknown.Load())
	}
	mustCheck(t, "cluster-features", rec.Ops())
}
