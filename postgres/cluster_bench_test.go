package postgres_test

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/internal/latencyproxy"
	"github.com/jackc/pgx/v5"
)

var (
	clusterRTTs     = flag.String("cluster.rtt", "0,2ms", "BenchmarkClusterScaling: round trips to add between the instances and PostgreSQL, comma-separated (0: straight to it)")
	clusterSizes    = flag.String("cluster.instances", "1,3", "BenchmarkClusterScaling: numbers of dlm serve instances, comma-separated")
	clusterClients  = flag.Int("cluster.clients", 96, "BenchmarkClusterScaling: dlm bench clients in all, split evenly over the instances")
	clusterDuration = flag.Duration("cluster.duration", 10*time.Second, "BenchmarkClusterScaling: how long each dlm bench uncontended runs")
	clusterWaits    = flag.Bool("cluster.waits", false, "BenchmarkClusterScaling: log what the instances' PostgreSQL sessions were doing, sampled from pg_stat_activity")
)

const errClusterFlags = "BenchmarkClusterScaling: -cluster.rtt takes durations and -cluster.instances counts from 1 to 26, comma-separated"

// BenchmarkClusterScaling measures how a cluster's throughput grows with its
// instances, with PostgreSQL on loopback or behind a chosen round trip (a
// latencyproxy adding half of it in each direction, as a network between
// the instances and the database would). For each round trip and number of
// instances it starts that many `dlm serve --postgres` processes on a fresh
// schema and runs one `dlm bench uncontended` per instance, all at once, with the
// clients split evenly over them; it reports their cycles per second
// together, the mean of their acquire p50s and, behind a round trip, the
// round trips per cycle (all the instances' connections: the lock path,
// and the LISTEN, notifications, heartbeats, sweeps and key lookups beside
// it). With -cluster.waits it logs what the instances' sessions were doing,
// sampled every 10 ms from pg_stat_activity: the sessions per sample, on
// average, in each state, wait event and statement (-v shows more than the
// first lines).
//
//	go test -run '^$' -bench ClusterScaling ./postgres/ -args -cluster.rtt 0,2ms -cluster.instances 1,3
func BenchmarkClusterScaling(b *testing.B) {
	var rtts []time.Duration
	var sizes []int
	for f := range strings.SplitSeq(*clusterRTTs, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d < 0 {
			b.Fatal(errClusterFlags)
		}
		rtts = append(rtts, d)
	}
	for f := range strings.SplitSeq(*clusterSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 26 {
			b.Fatal(errClusterFlags)
		}
		sizes = append(sizes, n)
	}
	for _, rtt := range rtts {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("rtt=%v/instances=%d", rtt, n), func(b *testing.B) {
				benchCluster(b, rtt, n)
			})
		}
	}
}

// benchReport is the part of `dlm bench --json` that is reported.
type benchReport struct {
	PerSecond  float64 `json:"per_second"`
	ErrorCount int64   `json:"error_count"`
	Ops        map[string]struct {
		P50Ms float64 `json:"p50_ms"`
	} `json:"ops"`
}

func benchCluster(b *testing.B, rtt time.Duration, n int) {
	addr := ""
	var proxy *latencyproxy.Proxy
	if rtt > 0 {
		u, err := url.Parse(dlmtest.PostgresURL(b))
		if err != nil {
			b.Fatal(err)
		}
		p, err := latencyproxy.Start("127.0.0.1:0", u.Host, rtt/2)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		addr, proxy = p.Addr(), p
	}
	insts, key, pgURL := serveClusterVia(b, n, addr)
	bin := dlmtest.Binary(b)
	var perSecond, p50 float64
	var errs, trips int64
	b.ResetTimer()
	for range b.N {
		var tripsBefore int64
		if proxy != nil {
			tripsBefore = proxy.RoundTrips()
		}
		stop := func() {}
		if *clusterWaits {
			stop = sampleWaits(b, pgURL)
		}
		reports := make([]benchReport, n)
		var wg sync.WaitGroup
		for i, in := range insts {
			// The first instances take the clients that do not divide evenly.
			clients := *clusterClients / n
			if i < *clusterClients%n {
				clients++
			}
			wg.Go(func() {
				cmd := exec.Command(bin, "bench", "uncontended", "--json",
					"--clients", strconv.Itoa(clients), "--duration", clusterDuration.String())
				cmd.Env = append(os.Environ(), "DLM_URL="+in.URL, "DLM_KEY="+key)
				out, err := cmd.Output()
				if err == nil {
					err = json.Unmarshal(out, &reports[i])
				}
				if err != nil {
					b.Errorf("dlm bench against instance %s: %v\n%s", in.name, err, out)
				}
			})
		}
		wg.Wait()
		stop()
		if proxy != nil {
			trips += proxy.RoundTrips() - tripsBefore
		}
		for _, r := range reports {
			perSecond += r.PerSecond
			p50 += r.Ops["acquire"].P50Ms / float64(n)
			errs += r.ErrorCount
		}
	}
	b.ReportMetric(perSecond/float64(b.N), "cycles/s")
	b.ReportMetric(p50/float64(b.N), "acquire-p50-ms")
	b.ReportMetric(float64(errs)/float64(b.N), "errors")
	if proxy != nil && perSecond > 0 {
		b.ReportMetric(float64(trips)/(perSecond*clusterDuration.Seconds()), "round-trips/cycle")
	}
	b.ReportMetric(0, "ns/op") // one op is a whole run: its time says nothing
}

// sampleWaits samples pg_stat_activity every 10 ms for the sessions of the
// cluster at pgURL (their application_name is the schema: serveClusterVia)
// until stop is called, which logs how many sessions were in each state,
// wait event and statement, on average over the samples, most first.
func sampleWaits(b *testing.B, pgURL string) (stop func()) {
	u, err := url.Parse(pgURL)
	if err != nil {
		b.Fatal(err)
	}
	app := u.Query().Get("application_name")
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, dlmtest.PostgresURL(b))
	if err != nil {
		b.Fatal(err)
	}
	counts := map[string]int{}
	total := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rows, err := conn.Query(ctx, `SELECT state || ' ' || coalesce(wait_event_type || ':' || wait_event, '-') || ' ' ||
					left(regexp_replace(query, '\s+', ' ', 'g'), 48)
				FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`, app)
			if err != nil {
				return
			}
			for rows.Next() {
				var k string
				if rows.Scan(&k) == nil {
					counts[k]++
				}
			}
			rows.Close()
			total++
		}
	}()
	return func() {
		cancel()
		<-done
		keys := slices.SortedFunc(maps.Keys(counts), func(x, y string) int { return cmp.Compare(counts[y], counts[x]) })
		var sb strings.Builder
		fmt.Fprintf(&sb, "sessions not idle, on average over %d samples, by state, wait event and statement:\n", total)
		for _, k := range keys[:min(len(keys), 15)] {
			fmt.Fprintf(&sb, "%6.2f  %s\n", float64(counts[k])/float64(max(total, 1)), k)
		}
		b.Log(sb.String())
	}
}
