package metrics_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
	dlmhttp "github.com/dlmhq/dlm/http"
	"github.com/dlmhq/dlm/metrics"
)

// BenchmarkHooks measures each hook alone, from all cores at once as the
// server calls them:
//
//	go test -run XXX -bench Hooks -benchmem ./metrics/
func BenchmarkHooks(b *testing.B) {
	m := metrics.New()
	grant := &dlm.Change{Granted: []dlm.Lease{{}}}
	release := &dlm.Change{Ended: []dlm.EndedLease{{Reason: dlm.Released}}}
	for _, bm := range []struct {
		name string
		fn   func()
	}{
		{"ObserveRequest", func() { m.ObserveRequest("/v1/locks/{name...}/acquire", "POST", 200, time.Millisecond) }},
		{"ChangedGrant", func() { m.Changed(grant) }},
		{"ChangedRelease", func() { m.Changed(release) }},
		{"Waited", func() { m.Waited(time.Millisecond, engine.WaitGranted) }},
		{"ObserveCommit", func() { m.ObserveCommit(64, time.Millisecond) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					bm.fn()
				}
			})
		})
	}
}

// BenchmarkAcquireRelease compares acquire+release cycles through the real
// HTTP API (64 clients on distinct names, durable commits) without and with
// metrics wired in as dlm serve wires them. One op is one cycle;
// cpu-µs/cycle is the CPU time of the whole process (clients included) per
// cycle, steadier than cycles/s on a shared machine. Compare several counts:
//
//	go test -run XXX -bench AcquireRelease -benchtime 20000x -count 5 ./metrics/
func BenchmarkAcquireRelease(b *testing.B) {
	for _, withMetrics := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", withMetrics), func(b *testing.B) {
			o := &testserver.Options{}
			var m *metrics.Metrics
			if withMetrics {
				m = metrics.New(metrics.WithLogger(slog.New(slog.DiscardHandler)))
				o.Engine.Observer = m
				o.Handler = []dlmhttp.Option{dlmhttp.WithObserver(m.ObserveRequest), dlmhttp.WithRoute("GET", "/metrics", m.Handler())}
			}
			s := testserver.New(b, o)
			if m != nil {
				m.SetEngine(s.Engine)
				s.Store.ObserveCommits(m.ObserveCommit)
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
			const clients = 64
			b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			var next atomic.Int64
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				path := fmt.Sprintf("/v1/locks/bench-%d/acquire", next.Add(1))
				body, _ := json.Marshal(map[string]any{"holder_id": "bench"})
				for pb.Next() {
					resp, err := send(client, s, "POST", path, body)
					if err != nil {
						b.Error(err)
						return
					}
					var l struct {
						LeaseID string `json:"lease_id"`
					}
					json.Unmarshal(resp, &l)
					if _, err := send(client, s, "DELETE", "/v1/leases/"+l.LeaseID, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
			// CPU time is steadier than throughput on a busy machine.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/cycle")
		})
	}
}

// cpuTime returns the CPU time (user and system) this process has used:
// server and clients together.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func send(c *http.Client, s *testserver.Server, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.TenantKey)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%s %s = %d %s", method, path, resp.StatusCode, b)
	}
	return b, err
}
