package postgres_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"

	"github.com/dlmhq/dlm/internal/latencyproxy"
)

var (
	clusterRTTs     = flag.String("cluster.rtt", "0,2ms", "BenchmarkClusterScaling: round trips to add between the instances and PostgreSQL, comma-separated (0: straight to it)")
	clusterSizes    = flag.String("cluster.instances", "1,3", "BenchmarkClusterScaling: numbers of dlm serve instances, comma-separated")
	clusterClients  = flag.Int("cluster.clients", 96, "BenchmarkClusterScaling: dlm bench clients in all, split evenly over the instances")
	clusterDuration = flag.Duration("cluster.duration", 10*time.Second, "BenchmarkClusterScaling: how long each dlm bench uncontended runs")
)

const errClusterFlags = "BenchmarkClusterScaling: -cluster.rtt takes durations and -cluster.instances counts from 1 to 26, comma-separated"

// BenchmarkClusterScaling measures how a cluster's throughput grows with its
// instances, with PostgreSQL on loopback or behind a chosen round trip (a
// latencyproxy adding half of it in each direction, as a network between
// the instances and the database would). For each round trip and number of
// instances it starts that many `dlm serve --postgres` processes on a fresh
// schema and runs one `dlm bench uncontended` per instance, all at once, with the
// clients split evenly over them; it reports their cycles per second
// together, and the mean of their acquire p50s.
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
		addr = p.Addr()
	}
	insts, key, _ := serveClusterVia(b, n, addr)
	bin := dlmtest.Binary(b)
	var perSecond, p50 float64
	var errs int64
	b.ResetTimer()
	for range b.N {
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
		for _, r := range reports {
			perSecond += r.PerSecond
			p50 += r.Ops["acquire"].P50Ms / float64(n)
			errs += r.ErrorCount
		}
	}
	b.ReportMetric(perSecond/float64(b.N), "cycles/s")
	b.ReportMetric(p50/float64(b.N), "acquire-p50-ms")
	b.ReportMetric(float64(errs)/float64(b.N), "errors")
	b.ReportMetric(0, "ns/op") // one op is a whole run: its time says nothing
}
