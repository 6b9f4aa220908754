package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
	dlmhttp "github.com/dlmhq/dlm/http"
	"github.com/dlmhq/dlm/internal/buildinfo"
	"github.com/dlmhq/dlm/metrics"
	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// server is a real dlm server with metrics wired as dlm serve wires them.
type server struct {
	*testserver.Server
	t       *testing.T
	scrapes int // scrapes of /metrics so far
}

func newServer(t *testing.T) *server {
	t.Helper()
	m := metrics.New(metrics.WithLogger(slog.New(slog.DiscardHandler)))
	s := testserver.New(t, &testserver.Options{
		// A fresh count at every scrape, so that the gauges can be checked
		// right after each step.
		Engine: engine.Options{Observer: m, StatsMaxAge: time.Nanosecond},
		Handler: []dlmhttp.Option{
			dlmhttp.WithObserver(m.ObserveRequest),
			dlmhttp.WithFailedAuth(m.ObserveFailedAuth),
			dlmhttp.WithRoute("GET", "/metrics", m.Handler()),
		},
	})
	m.SetEngine(s.Engine)
	s.Store.ObserveCommits(m.ObserveCommit)
	return &server{Server: s, t: t}
}

// call sends a JSON request with key and returns the status and the body
// decoded as an object.
func (s *server) call(key, method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	return call(s.t, context.Background(), s.URL, key, method, path, body)
}

func call(t *testing.T, ctx context.Context, base, key, method, path string, body any) (int, map[string]any) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// must sends a request with the tenant key and fails unless it answers want.
func (s *server) must(want int, method, path string, body any) map[string]any {
	s.t.Helper()
	status, m := s.call(s.TenantKey, method, path, body)
	if status != want {
		s.t.Fatalf("%s %s = %d %v, want %d", method, path, status, m, want)
	}
	return m
}

// queue starts a blocking acquire of name in the background, waits until it
// is queued and returns the channel of its status.
func (s *server) queue(ctx context.Context, name, mode string) <-chan int {
	s.t.Helper()
	ch := make(chan int, 1)
	go func() {
		status, _ := call(s.t, ctx, s.URL, s.TenantKey, "POST", "/v1/locks/"+name+"/acquire",
			map[string]any{"holder_id": "zq-waiter", "mode": mode, "wait_ms": 60000})
		ch <- status
	}()
	dlmtest.Eventually(s.t, name+" has a waiter", func() bool {
		v, err := s.Engine.Inspect(s.t.Context(), dlm.Key{Namespace: "default", Name: strings.ReplaceAll(name, "%2F", "/")})
		return err == nil && len(v.Waiters) == 1
	})
	return ch
}

// samples are a scrape's values by series: "name{label="value",…}", with
// histograms as name_count and name_sum.
type samples map[string]float64

// scrape reads /metrics over HTTP, without a key, and returns its samples
// and its text.
func (s *server) scrape() (samples, string) {
	s.t.Helper()
	s.scrapes++
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err != nil {
		s.t.Fatalf("GET /metrics = %d, %v:\n%s", resp.StatusCode, err, text)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		s.t.Fatalf("parsing /metrics: %v\n%s", err, text)
	}
	out := samples{}
	for name, f := range families {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(suffix string) string {
				if len(labels) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.Counter.GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.Gauge.GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key("_count")] = float64(m.Histogram.GetSampleCount())
				out[key("_sum")] = m.Histogram.GetSampleSum()
			default:
				out[key("")] = m.Untyped.GetValue()
			}
		}
	}
	return out, string(text)
}

// only returns the samples whose series name is one of names.
func (ss samples) only(names ...string) samples {
	out := samples{}
	for k, v := range ss {
		name, _, _ := strings.Cut(k, "{")
		if slices.Contains(names, name) {
			out[k] = v
		}
	}
	return out
}

const (
	acquireRoute = "/v1/locks/{name...}/acquire"
	leaseRoute   = "/v1/leases/{lease_id}"
)

func requests(route, method string, code int) string {
	return fmt.Sprintf("dlm_http_requests_total{code=\"%d\",method=%q,route=%q}", code, method, route)
}

// TestMetrics drives a real server through every kind of lock operation
// and checks the exact counters, gauges and labels that /metrics shows.
func TestMetrics(t *testing.T) {
	s := newServer(t)
	var secrets []string // lease IDs, which must never show in the metrics

	// acquire, renew, release
	l := s.must(200, "POST", "/v1/locks/zq-alpha%2F1/acquire", map[string]any{"holder_id": "zq-h1"})
	secrets = append(secrets, l["lease_id"].(string))
	s.must(200, "POST", "/v1/leases/"+l["lease_id"].(string)+"/renew", nil)
	s.must(200, "DELETE", "/v1/leases/"+l["lease_id"].(string), nil)

	// an expiry
	s.must(200, "POST", "/v1/locks/zq-short/acquire", map[string]any{"holder_id": "zq-h2", "ttl_ms": 100})

	// a handoff: a waiter granted when the holder releases
	held := s.must(200, "POST", "/v1/locks/zq-beta/acquire", map[string]any{"holder_id": "zq-h3"})
	granted := s.queue(t.Context(), "zq-beta", "exclusive")
	s.must(200, "DELETE", "/v1/leases/"+held["lease_id"].(string), nil)
	if status := <-granted; status != 200 {
		t.Fatalf("waiter = %d, want 200", status)
	}

	// a force-release of two shared holders
	for _, h := range []string{"zq-h4", "zq-h5"} {
		s.must(200, "POST", "/v1/locks/zq-gamma/acquire", map[string]any{"holder_id": h, "mode": "shared"})
	}
	if status, m := s.call(s.AdminKey, "POST", "/v1/locks/zq-gamma/force-release?tenant=default", nil); status != 200 {
		t.Fatalf("force-release = %d %v", status, m)
	}

	// a wait that times out
	s.must(200, "POST", "/v1/locks/zq-delta/acquire", map[string]any{"holder_id": "zq-h6"})
	s.must(409, "POST", "/v1/locks/zq-delta/acquire", map[string]any{"holder_id": "zq-h7", "wait_ms": 150})

	// a shared lease, a shared waiter and a watch, live at the next scrape
	s.must(200, "POST", "/v1/locks/zq-eps/acquire", map[string]any{"holder_id": "zq-h8", "mode": "shared"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cancelled := s.queue(ctx, "zq-delta", "shared")
	ws, _, err := websocket.Dial(t.Context(), s.URL+"/v1/watch", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + s.TenantKey}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	dlmtest.Eventually(t, "the watch is connected", func() bool { return s.Engine.Watchers() == 1 })

	got, _ := s.scrape()
	live := samples{
		`dlm_leases{mode="exclusive"}`:  2, // zq-beta (the waiter's), zq-delta
		`dlm_leases{mode="shared"}`:     1, // zq-eps
		`dlm_waiters{mode="exclusive"}`: 0,
		`dlm_waiters{mode="shared"}`:    1, // on zq-delta
		`dlm_watchers`:                  1,
	}
	if diff := cmp.Diff(got.only("dlm_leases", "dlm_waiters", "dlm_watchers"), live); diff != "" {
		t.Errorf("gauges while the waiter and the watch are there (-got +want):\n%s", diff)
	}

	// The client leaves the queue, the watch closes, the short lease
	// expires: each is counted once it is over.
	cancel()
	<-cancelled
	ws.Close(websocket.StatusNormalClosure, "")

	want := samples{
		requests(acquireRoute, "POST", 200):                               8,
		requests(acquireRoute, "POST", 409):                               1,
		requests(acquireRoute, "POST", dlmhttp.StatusClientClosedRequest): 1,
		requests(leaseRoute+"/renew", "POST", 200):                        1,
		requests(leaseRoute, "DELETE", 200):                               2,
		requests("/v1/locks/{name...}/force-release", "POST", 200):        1,
		requests("/v1/watch", "GET", 101):                                 1,

		"dlm_grants_total":         8, // alpha, short, beta ×2, gamma ×2, delta, eps
		"dlm_releases_total":       2,
		"dlm_expiries_total":       1,
		"dlm_force_releases_total": 2,

		`dlm_wait_seconds_count{outcome="granted"}`:   1,
		`dlm_wait_seconds_count{outcome="timeout"}`:   1,
		`dlm_wait_seconds_count{outcome="cancelled"}`: 1,
		`dlm_wait_seconds_count{outcome="shutdown"}`:  0,

		`dlm_leases{mode="exclusive"}`:  2,
		`dlm_leases{mode="shared"}`:     1,
		`dlm_waiters{mode="exclusive"}`: 0,
		`dlm_waiters{mode="shared"}`:    0,
		`dlm_watchers`:                  0,
	}
	names := []string{"dlm_http_requests_total", "dlm_grants_total", "dlm_releases_total", "dlm_expiries_total",
		"dlm_force_releases_total", "dlm_wait_seconds_count", "dlm_leases", "dlm_waiters", "dlm_watchers"}
	var text, diff string
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Every scrape before this one is a request to /metrics too.
		want[requests("/metrics", "GET", 200)] = float64(s.scrapes)
		got, text = s.scrape()
		if diff = cmp.Diff(got.only(names...), want); diff == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if diff != "" {
		t.Fatalf("metrics (-got +want):\n%s", diff)
	}

	// Latency: every request but the WebSocket, by route and method.
	if n := got[`dlm_http_request_duration_seconds_count{method="POST",route="`+acquireRoute+`"}`]; n != 10 {
		t.Errorf("acquire latency count = %v, want 10", n)
	}
	if sum := got[`dlm_wait_seconds_sum{outcome="timeout"}`]; sum < 0.15 {
		t.Errorf("the timed out wait took %vs, want at least its wait_ms of 150ms", sum)
	}
	for k := range got {
		if strings.HasPrefix(k, "dlm_http_request_duration_seconds") && strings.Contains(k, "/v1/watch") {
			t.Errorf("a WebSocket's session is in the latency histogram: %s", k)
		}
	}
	// Group commit: every operation above was committed in some batch.
	batches, ops := got["dlm_commit_batch_size_count"], got["dlm_commit_batch_size_sum"]
	if batches == 0 || ops < 8 || got["dlm_commit_seconds_count"] != batches || got["dlm_commit_seconds_sum"] <= 0 {
		t.Errorf("commits: %v batches of %v operations, %v timed taking %vs", batches, ops,
			got["dlm_commit_seconds_count"], got["dlm_commit_seconds_sum"])
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := got[name]; !ok {
			t.Errorf("no %s: runtime and process collectors missing", name)
		}
	}
	// No lock name, holder or lease ID is ever a label value.
	for _, secret := range append(secrets, "zq-") {
		if strings.Contains(text, secret) {
			t.Errorf("%q appears in /metrics", secret)
		}
	}
	t.Logf("%d series; %v commits of %v operations", len(got), batches, ops)
}

// TestStatsAreCached checks that scrapes reuse the count of leases for
// StatsMaxAge, so that frequent scrapes do not count every lease each time.
func TestStatsAreCached(t *testing.T) {
	s := testserver.New(t, &testserver.Options{Engine: engine.Options{StatsMaxAge: time.Hour}})
	before, err := s.Engine.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	key := dlm.Key{Namespace: "default", Name: "cached"}
	if _, _, err := s.Engine.Acquire(t.Context(), engine.AcquireRequest{Tenant: "default", Key: key, HolderID: "h"}); err != nil {
		t.Fatal(err)
	}
	after, err := s.Engine.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("stats within StatsMaxAge = %+v, want the cached %+v", after, before)
	}
}

// TestMetricNames lists every dlm metric, so that a rename is a deliberate
// change of this list (and of the README, which lists them too).
func TestMetricNames(t *testing.T) {
	s := newServer(t)
	s.must(200, "GET", "/healthz", nil)
	got, _ := s.scrape()
	names := map[string]bool{}
	for k := range got {
		name, _, _ := strings.Cut(k, "{")
		if strings.HasPrefix(name, "dlm_") {
			names[strings.TrimSuffix(strings.TrimSuffix(name, "_count"), "_sum")] = true
		}
	}
	want := []string{
		"dlm_auth_failures_total", "dlm_build_info",
		"dlm_commit_batch_size", "dlm_commit_seconds", "dlm_expiries_total", "dlm_force_releases_total",
		"dlm_grants_total", "dlm_http_request_duration_seconds", "dlm_http_requests_total", "dlm_leases",
		"dlm_releases_total", "dlm_wait_seconds", "dlm_waiters", "dlm_watchers",
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(names)), want); diff != "" {
		t.Errorf("metric names (-got +want):\n%s", diff)
	}
}

// TestBuildInfoAndFailedAuth: dlm_build_info names the build with the
// value 1, and every request refused for its key counts once.
func TestBuildInfoAndFailedAuth(t *testing.T) {
	s := newServer(t)
	for _, key := range []string{"dlm_nosuch_secret", "", s.TenantKey + "x"} {
		if status, _ := s.call(key, "GET", "/v1/locks", nil); status != 401 {
			t.Fatalf("GET /v1/locks with key %q = %d, want 401", key, status)
		}
	}
	if status, _ := s.call(s.TenantKey, "GET", "/v1/tenants", nil); status != 403 {
		t.Fatalf("tenant key on an admin route = %d, want 403", status)
	}
	got, _ := s.scrape()
	if v := got["dlm_auth_failures_total"]; v != 3 {
		t.Errorf("dlm_auth_failures_total = %v, want 3 (the 403 is no failed authentication)", v)
	}
	bi := buildinfo.Get()
	series := fmt.Sprintf(`dlm_build_info{go=%q,revision=%q,version=%q}`, bi.Go, bi.Revision, bi.Version)
	if v, ok := got[series]; !ok || v != 1 {
		t.Errorf("%s = %v, %v; want 1", series, v, ok)
	}
}

// failingEngine is an engine whose store does not answer.
type failingEngine struct{}

func (failingEngine) Stats(context.Context) (dlm.Stats, error) {
	return dlm.Stats{}, dlm.Errorf(dlm.CodeUnavailable, "storage: down")
}
func (failingEngine) Watchers() int { return 3 }

// TestScrapeSurvivesStoreFailure: when leases cannot be counted, the other
// metrics are still served.
func TestScrapeSurvivesStoreFailure(t *testing.T) {
	m := metrics.New(metrics.WithLogger(slog.New(slog.DiscardHandler)))
	m.SetEngine(failingEngine{})
	m.Changed(&dlm.Change{Granted: make([]dlm.Lease, 2)})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	if resp.StatusCode != 200 || !strings.Contains(text, "dlm_grants_total 2\n") || !strings.Contains(text, "dlm_watchers 3\n") {
		t.Errorf("GET /metrics = %d:\n%s", resp.StatusCode, text)
	}
	if strings.Contains(text, "dlm_leases{") {
		t.Errorf("lease gauges served without a count:\n%s", text)
	}
}
