package dlmhttp_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// BenchmarkLeaseEndedPush measures how long after a force-release is sent,
// or after its expiry, a session hears that its lease ended: on one embedded server,
// and across two PostgreSQL instances (the session on one, the force-release
// on the other). Each op is one lease; p50, p99 and max are reported in ms,
// and the max of each part of the lag: until the end is decided (the
// event's "at": the force-release's request and decision) and from then
// until the push is read (the commit, the feed, the session's write and
// the client's read). An expiry's "at" is its expires_at, so all of its
// lag counts as the second part, the sweep's wake-up included.
//
//	go test ./http/ -run '^$' -bench LeaseEndedPush -benchtime 200x
func BenchmarkLeaseEndedPush(b *testing.B) {
	b.Run("embedded/force-release", func(b *testing.B) {
		s := testserver.New(b, nil)
		benchPush(b, &backend{urls: []string{s.URL}, tenantKey: s.TenantKey, adminKey: s.AdminKey}, false)
	})
	b.Run("embedded/expiry", func(b *testing.B) {
		s := testserver.New(b, nil)
		benchPush(b, &backend{urls: []string{s.URL}, tenantKey: s.TenantKey, adminKey: s.AdminKey}, true)
	})
	b.Run("postgres-2-instances/force-release", func(b *testing.B) {
		benchPush(b, postgresCluster(b, 2), false)
	})
	b.Run("postgres-2-instances/expiry", func(b *testing.B) {
		benchPush(b, postgresCluster(b, 2), true)
	})
}

// benchPush acquires a lease over a session on the first instance b.N
// times and ends it: by a force-release sent to the other instance, timed
// from its sending, or by expiry (ttl 100 ms), timed from expires_at.
func benchPush(b *testing.B, be *backend, expiry bool) {
	s := dialSession(b, be.urls[0], be.tenantKey)
	admin := &api{b, be.other(0), be.adminKey}
	lags := make([]time.Duration, 0, b.N)
	var decide, deliver time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("push-%d", i)
		fields := map[string]any{"name": name, "holder_id": "h"}
		if expiry {
			fields["ttl_ms"] = 100
		}
		l := s.call("acquire", fields)
		var from time.Time
		if expiry {
			from, _ = time.Parse(time.RFC3339Nano, l["expires_at"].(string))
		} else {
			from = time.Now() // the push may overtake the answer
			admin.must(200, "POST", "/v1/locks/"+name+"/force-release?tenant=default", nil)
		}
		le := s.leaseEnded()
		now := time.Now()
		lags = append(lags, now.Sub(from))
		if le["lease_id"] != l["lease_id"] {
			b.Fatalf("push %v for lease %v", le, l["lease_id"])
		}
		at, err := time.Parse(time.RFC3339Nano, le["at"].(string))
		if err != nil {
			b.Fatalf("push %v: at: %v", le, err)
		}
		decide, deliver = max(decide, at.Sub(from)), max(deliver, now.Sub(at))
	}
	b.StopTimer()
	slices.Sort(lags)
	ms := func(q float64) float64 { return float64(lags[int(q*float64(len(lags)-1))]) / 1e6 }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(1), "max-ms")
	b.ReportMetric(float64(decide)/1e6, "decide-max-ms")
	b.ReportMetric(float64(deliver)/1e6, "deliver-max-ms")
}
