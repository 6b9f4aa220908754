package dlmhttp_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// BenchmarkAcquireRelease measures acquire+release cycles through the real
// HTTP API with 64 concurrent clients on distinct names, durable commits
// included. One op is one cycle (two requests):
//
//	go test -run XXX -bench AcquireRelease -benchtime 10000x ./http/
func BenchmarkAcquireRelease(b *testing.B) {
	runCycles(b, testserver.New(b, nil))
}

// runCycles runs acquire+release cycles with 64 clients on distinct names.
func runCycles(b *testing.B, s *testserver.Server) {
	const clients = 64
	b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		path := fmt.Sprintf("/v1/locks/bench-%d/acquire", next.Add(1))
		body := map[string]any{"holder_id": "bench"}
		for pb.Next() {
			status, resp, err := post(s, "POST", path, body)
			if err != nil || status != 200 {
				b.Errorf("acquire: %d %s %v", status, resp, err)
				return
			}
			var l struct {
				LeaseID string `json:"lease_id"`
			}
			json.Unmarshal(resp, &l)
			if status, resp, err := post(s, "DELETE", "/v1/leases/"+l.LeaseID, nil); err != nil || status != 200 {
				b.Errorf("release: %d %s %v", status, resp, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
}

// BenchmarkAcquireReleaseIdleWatchers is BenchmarkAcquireRelease with 1,000
// watchers connected that match none of the benchmark's events: compare the
// two to see what watchers cost the lock path.
//
//	go test -run XXX -bench 'AcquireRelease' -benchtime 10000x ./http/
func BenchmarkAcquireReleaseIdleWatchers(b *testing.B) {
	s := testserver.New(b, nil)
	for i := range 1000 {
		dial(b, s, s.TenantKey, fmt.Sprintf("name=idle-%d", i))
	}
	runCycles(b, s)
}
