// Package metrics exposes dlm's Prometheus metrics at /metrics. It owns
// every Prometheus type: the engine, the HTTP handler and the SQLite store
// only offer small hooks (engine.Observer, dlmhttp.WithObserver,
// sqlite.Store.ObserveCommits) that a *Metrics plugs into.
//
// Wiring, in the order the pieces are built:
//
//	m := metrics.New()
//	e := engine.New(store, engine.Options{Observer: m})
//	m.SetEngine(e)
//	store.ObserveCommits(m.ObserveCommit) // SQLite only
//	h := dlmhttp.NewHandler(e, dlmhttp.WithObserver(m.ObserveRequest),
//		dlmhttp.WithFailedAuth(m.ObserveFailedAuth),
//		dlmhttp.WithRoute("GET", "/metrics", m.Handler()))
//
// Every label has a small fixed set of values: routes are route patterns,
// never paths, so no lock name or lease ID ever becomes a label.
package metrics

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/internal/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Histogram buckets, in seconds unless said otherwise.
var (
	// latencyBuckets run from 100µs, a request served from memory with
	// its commit shared, to 10s; waitBuckets go on to 5m, the default
	// longest wait, since a blocking acquire's request lasts its wait.
	latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	waitBuckets    = append(append([]float64(nil), latencyBuckets...), 30, 60, 300)
	// commitBuckets run from 50µs (an fdatasync of a preallocated block
	// takes about 90µs) to 1s.
	commitBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}
	// batchBuckets count the saves of one commit: 1, 2, 4 … 512.
	batchBuckets = prometheus.ExponentialBuckets(1, 2, 10)
)

// statsTimeout bounds the count of leases and waiters behind one scrape.
const statsTimeout = 5 * time.Second

// Engine is what the gauges read: *engine.Engine.
type Engine interface {
	// Stats counts leases and waiters by mode; it may be cached.
	Stats(ctx context.Context) (dlm.Stats, error)
	// Watchers counts the watches connected.
	Watchers() int
}

// Metrics holds dlm's metrics in a registry of its own (not Prometheus'
// global one). Its methods are safe for concurrent use; the hooks cost a few
// atomic operations each.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	// series caches the children of requests and requestSeconds by label
	// values, so that a request costs a map lookup rather than hashing its
	// labels twice. The map is replaced, never changed: readers take no
	// lock. Its size is bounded by the label values (see ObserveRequest).
	series   atomic.Pointer[map[requestKey]*requestSeries]
	seriesMu sync.Mutex // serializes replacing series

	grants, releases, expiries, forceReleases prometheus.Counter
	failedAuth                                prometheus.Counter
	wait                                      [5]prometheus.Observer // by engine.WaitOutcome

	commitBatch   prometheus.Histogram
	commitSeconds prometheus.Histogram

	engine atomic.Pointer[Engine]
	// gauge descriptions, read from the engine at each scrape
	leasesDesc, waitersDesc, watchersDesc *prometheus.Desc
}

var _ engine.Observer = (*Metrics)(nil)

// Option configures New.
type Option func(*Metrics)

// WithLogger sends errors met while serving a scrape to l instead of
// slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(m *Metrics) { m.log = l }
}

// New returns the metrics, with the Go runtime and process collectors. The
// gauges of leases, waiters and watchers appear once SetEngine is called.
func New(opts ...Option) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), log: slog.Default()}
	for _, o := range opts {
		o(m)
	}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dlm_http_requests_total",
		Help: "HTTP requests answered, by route pattern, method and status code. WebSockets (/v1/watch, code 101) count when they close.",
	}, []string{"route", "method", "code"})
	m.requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dlm_http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by route pattern and method; a blocking acquire's includes its wait. WebSockets are left out.",
		Buckets: waitBuckets,
	}, []string{"route", "method"})
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m.grants = counter("dlm_grants_total", "Leases granted, at once or from the queue.")
	m.releases = counter("dlm_releases_total", "Leases released by their holder.")
	m.expiries = counter("dlm_expiries_total", "Leases that expired unrenewed.")
	m.forceReleases = counter("dlm_force_releases_total", "Leases ended by an admin's force-release.")
	m.failedAuth = counter("dlm_auth_failures_total", "Requests refused for their API key: missing, malformed, unknown or revoked (401, or 429 once an address is over its limit of failed attempts).")
	bi := buildinfo.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dlm_build_info",
		Help:        "Always 1; its labels name the running build: version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Revision, "go": bi.Go},
	})
	build.Set(1)
	waits := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dlm_wait_seconds",
		Help:    "Time blocking acquires spent queued, by how the wait ended: granted (a handoff), timeout, cancelled (the client left) or shutdown.",
		Buckets: waitBuckets,
	}, []string{"outcome"})
	for o := engine.WaitGranted; o <= engine.WaitShutdown; o++ {
		m.wait[o] = waits.WithLabelValues(o.String())
	}
	m.commitBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dlm_commit_batch_size",
		Help:    "Operations that shared one durable commit (group commit).",
		Buckets: batchBuckets,
	})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dlm_commit_seconds",
		Help:    "Time from the start of a commit batch to its durable commit.",
		Buckets: commitBuckets,
	})
	m.leasesDesc = prometheus.NewDesc("dlm_leases", "Leases held now in the store, by mode; with a shared store every instance reports the same count.", []string{"mode"}, nil)
	m.waitersDesc = prometheus.NewDesc("dlm_waiters", "Blocking acquires queued now in the store, by mode; with a shared store every instance reports the same count.", []string{"mode"}, nil)
	m.watchersDesc = prometheus.NewDesc("dlm_watchers", "Event watches (WebSockets) connected now.", nil, nil)
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestSeconds,
		m.grants, m.releases, m.expiries, m.forceReleases, waits,
		m.failedAuth, build,
		m.commitBatch, m.commitSeconds,
		gauges{m},
	)
	return m
}

// SetEngine makes the gauges of leases, waiters and watchers read e.
func (m *Metrics) SetEngine(e Engine) { m.engine.Store(&e) }

// Handler serves the metrics in the Prometheus text format (or another
// format the scraper negotiates). If the engine cannot count leases, the
// other metrics are still served and the error is logged.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Changed implements engine.Observer: it counts grants and ended leases.
func (m *Metrics) Changed(c *dlm.Change) {
	if n := len(c.Granted); n > 0 {
		m.grants.Add(float64(n))
	}
	for i := range c.Ended {
		switch c.Ended[i].Reason {
		case dlm.Released:
			m.releases.Inc()
		case dlm.Expired:
			m.expiries.Inc()
		case dlm.ForceReleased:
			m.forceReleases.Inc()
		}
	}
}

// Waited implements engine.Observer.
func (m *Metrics) Waited(d time.Duration, outcome engine.WaitOutcome) {
	if int(outcome) < len(m.wait) && m.wait[outcome] != nil {
		m.wait[outcome].Observe(d.Seconds())
	}
}

// ObserveRequest counts one HTTP request; pass it to dlmhttp.WithObserver.
// The duration of a WebSocket (status 101) is its whole session, not a
// latency, so it stays out of the duration histogram.
func (m *Metrics) ObserveRequest(route, method string, status int, d time.Duration) {
	s := m.requestSeries(requestKey{route, method, status})
	s.count.Inc()
	if s.seconds != nil {
		s.seconds.Observe(d.Seconds())
	}
}

// ObserveFailedAuth counts one request refused for its key; pass it to
// dlmhttp.WithFailedAuth.
func (m *Metrics) ObserveFailedAuth() { m.failedAuth.Inc() }

type requestKey struct {
	route, method string
	status        int
}

type requestSeries struct {
	count   prometheus.Counter
	seconds prometheus.Observer // nil for WebSockets
}

// requestSeries returns the series of k, making them on first use.
func (m *Metrics) requestSeries(k requestKey) *requestSeries {
	if p := m.series.Load(); p != nil {
		if s := (*p)[k]; s != nil {
			return s
		}
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	old := map[requestKey]*requestSeries{}
	if p := m.series.Load(); p != nil {
		if s := (*p)[k]; s != nil {
			return s
		}
		old = *p
	}
	s := &requestSeries{count: m.requests.WithLabelValues(k.route, k.method, codeLabel(k.status))}
	if k.status != http.StatusSwitchingProtocols {
		s.seconds = m.requestSeconds.WithLabelValues(k.route, k.method)
	}
	next := make(map[requestKey]*requestSeries, len(old)+1)
	maps.Copy(next, old)
	next[k] = s
	m.series.Store(&next)
	return s
}

// ObserveCommit records one durable commit of ops operations that took d;
// pass it to sqlite.Store.ObserveCommits.
func (m *Metrics) ObserveCommit(ops int, d time.Duration) {
	m.commitBatch.Observe(float64(ops))
	m.commitSeconds.Observe(d.Seconds())
}

// codeLabels holds the label of every valid status code, so that counting a
// request allocates nothing.
var codeLabels = func() (l [600]string) {
	for i := 100; i < len(l); i++ {
		l[i] = strconv.Itoa(i)
	}
	return l
}()

func codeLabel(status int) string {
	if status >= 100 && status < len(codeLabels) {
		return codeLabels[status]
	}
	return strconv.Itoa(status)
}

// gauges reads the engine's counts at each scrape.
type gauges struct{ m *Metrics }

func (g gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.m.leasesDesc
	ch <- g.m.waitersDesc
	ch <- g.m.watchersDesc
}

func (g gauges) Collect(ch chan<- prometheus.Metric) {
	p := g.m.engine.Load()
	if p == nil {
		return
	}
	e := *p
	ch <- prometheus.MustNewConstMetric(g.m.watchersDesc, prometheus.GaugeValue, float64(e.Watchers()))
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	st, err := e.Stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(g.m.leasesDesc, err)
		return
	}
	for _, d := range []struct {
		desc   *prometheus.Desc
		counts dlm.ModeCounts
	}{{g.m.leasesDesc, st.Leases}, {g.m.waitersDesc, st.Waiters}} {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, float64(d.counts.Exclusive), dlm.Exclusive.String())
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, float64(d.counts.Shared), dlm.Shared.String())
	}
}
