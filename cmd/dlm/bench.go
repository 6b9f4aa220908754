package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// benchUsage is the --help text of dlm bench.
const benchUsage = `Bench is a load generator: it runs a workload against a dlm server over the
HTTP API for a fixed time and prints throughput, latency percentiles per
operation and errors by code. Workloads:

  uncontended  each client acquires and releases an exclusive lock on its own
               name (--clients 64): cycles/s and acquire latency
  contended    every client waits for one name (blocking acquire) and
               releases it at once (--clients 32): handoffs/s, the longest
               wait, and how fairly (FIFO) the turns went round
  hold         acquire --leases distinct leases with a long TTL and keep
               them: acquire rate overall and in the first and last 10%, and
               the server's memory (RSS) before and after. Runs until all are
               held unless --duration is given; --release ends them after.
  mixed        shared and exclusive acquires on --names names, each followed
               by --renews renewals and a release

With --protocol session each client is one WebSocket to /v1/session instead
of an HTTP connection (uncontended, contended and hold), one request at a
time as over HTTP, or --pipeline N workloads at once on each connection
(what a session is for: one client's many locks on one connection).

dlm bench null --listen ADDR runs no workload: it serves the null server, the
ceiling to read dlm's figures against. It answers acquire and release from a
map (same JSON, no durability, no authentication), also over the session
protocol, and /metrics with its CPU and memory; run the uncontended workload against it (any DLM_KEY) and then
against dlm serve, on the same machine, and compare.

Lock names start with bench/RUN-ID/, fresh for every run. The server's memory
and CPU come from its /metrics (process_resident_memory_bytes,
process_cpu_seconds_total) or, failing that, from /proc with --server-pid.
A progress line goes to stderr every second if it is a terminal (or with
--progress). SIGINT ends the run early and still prints the report.
`

// Workload defaults that differ by workload.
var benchDefaults = map[string]struct {
	clients int
	ttl     time.Duration
}{
	"uncontended": {64, 30 * time.Second},
	"contended":   {32, 30 * time.Second},
	"hold":        {64, time.Hour},
	"mixed":       {64, 30 * time.Second},
}

// benchTimeout bounds one request, on top of the time the server is asked to
// wait for a lock.
const benchTimeout = 30 * time.Second

// benchConfig is a parsed dlm bench command line.
type benchConfig struct {
	workload    string
	url         string
	clients     int
	duration    time.Duration
	durationSet bool
	leases      int
	names       int
	ttl         time.Duration
	wait        time.Duration
	renews      int
	sharedRatio float64
	release     bool
	serverPID   int
	progress    bool
	json        bool
	listen      string
	protocol    string
	pipeline    int
}

func (m *Main) runBench(ctx context.Context, g *globals, args []string) error {
	var c benchConfig
	fs := m.newFlagSet(g, "bench", "WORKLOAD [flags]", benchUsage)
	fs.IntVar(&c.clients, "clients", 0, "concurrent clients, each with its own connection (default 64; contended 32)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to run (hold: until all --leases are held, unless given)")
	fs.IntVar(&c.leases, "leases", 100_000, "hold: how many leases to acquire and keep")
	fs.IntVar(&c.names, "names", 16, "mixed: how many lock names to share")
	fs.DurationVar(&c.ttl, "ttl", 0, "lease TTL (default 30s; hold 1h)")
	fs.DurationVar(&c.wait, "wait", 10*time.Second, "contended, mixed: how long a blocking acquire may wait (wait_ms)")
	fs.IntVar(&c.renews, "renews", 1, "mixed: renewals of each lease before its release")
	fs.Float64Var(&c.sharedRatio, "shared-ratio", 0.75, "mixed: fraction of acquires that are shared")
	fs.BoolVar(&c.release, "release", false, "hold: release the leases at the end (default: keep them until they expire)")
	fs.IntVar(&c.serverPID, "server-pid", 0, "read the server's memory and CPU from /proc/`PID` when it has no /metrics")
	fs.BoolVar(&c.progress, "progress", false, "print a progress line every second even if stderr is not a terminal")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7071", "null: the address to serve the null server on")
	fs.IntVar(&c.pipeline, "pipeline", 1, "session: workloads each client runs at once on its one connection")
	fs.StringVar(&c.protocol, "protocol", "http", "http, or session: each client one WebSocket to /v1/session (uncontended, contended, hold)")
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { c.durationSet = c.durationSet || f.Name == "duration" })
	c.workload, c.url, c.json = pos[0], g.url, g.json
	if c.workload == "null" {
		return runBenchNull(ctx, c.listen, func(addr string) {
			fmt.Fprintf(m.Stdout, "dlm bench: the null server listens on http://%s\n", addr)
		})
	}
	def, ok := benchDefaults[c.workload]
	switch {
	case !ok:
		return usagef("bench: unknown workload %q: want uncontended, contended, hold, mixed or null", c.workload)
	case c.clients < 0 || c.leases <= 0 || c.names <= 0 || c.renews < 0:
		return usagef("bench: --clients, --leases, --names and --renews must be positive")
	case c.duration <= 0 || c.wait < 0 || c.ttl < 0:
		return usagef("bench: --duration must be positive, --wait and --ttl not negative")
	case c.sharedRatio < 0 || c.sharedRatio > 1:
		return usagef("bench: --shared-ratio must be between 0 and 1")
	case c.protocol != "http" && c.protocol != "session":
		return usagef("bench: --protocol must be http or session")
	case c.protocol == "session" && c.workload == "mixed":
		return usagef("bench: the mixed workload runs over http only")
	case c.pipeline < 1 || c.pipeline > 1 && c.protocol != "session":
		return usagef("bench: --pipeline must be at least 1, and more only with --protocol session")
	}
	if c.clients == 0 {
		c.clients = def.clients
	}
	if c.ttl == 0 {
		c.ttl = def.ttl
	}
	if c.workload == "hold" {
		c.clients = min(c.clients, c.leases)
	}
	key, err := g.apiKey(false)
	if err != nil {
		return err
	}
	t, err := newBenchTarget(g.url, key, g.caCert)
	if err != nil {
		return err
	}
	r, err := newBenchRun(c, t)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := r.run(ctx, m.Stderr, stop)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(m.Stdout, rep)
	}
	rep.print(m.Stdout)
	return nil
}

// benchOp is a kind of request whose latency is reported apart.
type benchOp int

const (
	opAcquire benchOp = iota
	opAcquireShared
	opAcquireExclusive
	opRenew
	opRelease
	numBenchOps
)

var benchOpNames = [numBenchOps]string{"acquire", "acquire_shared", "acquire_exclusive", "renew", "release"}

// benchRun is one run of a workload.
type benchRun struct {
	cfg    benchConfig
	target *benchTarget
	runID  string
	prefix string // of every lock name, "bench/RUN-ID/"
	start  time.Time

	stopping atomic.Bool
	stopOnce sync.Once
	stopped  chan struct{} // closed when the run should end
	abort    atomic.Pointer[string]

	done     atomic.Int64 // units of the workload done: cycles, grants, leases
	requests atomic.Int64
	failures atomic.Int64

	workers []*benchWorker
	hold    *holdState
}

func newBenchRun(c benchConfig, t *benchTarget) (*benchRun, error) {
	var id [4]byte
	rand.Read(id[:])
	r := &benchRun{cfg: c, target: t, runID: hex.EncodeToString(id[:]), stopped: make(chan struct{})}
	r.prefix = "bench/" + r.runID + "/"
	var sess *benchSession
	for i := range c.clients * c.pipeline {
		w := &benchWorker{r: r, id: i, conn: newBenchConn(t), errs: map[string]int64{}}
		if c.protocol == "session" {
			if i%c.pipeline == 0 {
				sess = newBenchSession(t, c.url)
			}
			w.sess = sess
		}
		r.workers = append(r.workers, w)
	}
	return r, nil
}

// stop ends the run: workers start no new cycle.
func (r *benchRun) stop() {
	r.stopOnce.Do(func() {
		r.stopping.Store(true)
		close(r.stopped)
	})
}

// fail ends the run because going on is pointless (a server limit).
func (r *benchRun) fail(why string) {
	r.abort.CompareAndSwap(nil, &why)
	r.stop()
}

// lockPath is the escaped path of a lock's route, "/v1/locks/NAME" + suffix.
func (r *benchRun) lockPath(name, suffix string) []byte {
	return []byte("/v1/locks/" + url.PathEscape(r.prefix+name) + suffix)
}

// run checks that the server answers, runs the workload and reports.
// stopSignals is called once the run is interrupted, so that a second
// signal kills the process.
func (r *benchRun) run(ctx context.Context, stderr io.Writer, stopSignals func()) (*benchReport, error) {
	if err := r.preflight(); err != nil {
		return nil, err
	}
	var work func(*benchWorker)
	switch r.cfg.workload {
	case "uncontended":
		work = (*benchWorker).uncontended
	case "contended":
		work = (*benchWorker).contended
	case "hold":
		r.hold = newHoldState(r.cfg.leases)
		work = (*benchWorker).holdLeases
	case "mixed":
		work = (*benchWorker).mixed
	}
	if r.cfg.protocol == "session" {
		work = map[string]func(*benchWorker){
			"uncontended": (*benchWorker).sessionUncontended,
			"contended":   (*benchWorker).sessionContended,
			"hold":        (*benchWorker).sessionHold,
		}[r.cfg.workload]
	}
	before := readServerStats(r.target, r.cfg.serverPID)
	cpuBefore := processCPU()
	r.start = time.Now()
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(func() { work(w) })
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	var timeout <-chan time.Time
	if r.cfg.workload != "hold" || r.cfg.durationSet {
		t := time.NewTimer(r.cfg.duration)
		defer t.Stop()
		timeout = t.C
	}
	stopProgress := r.startProgress(stderr)
	interrupted := false
	select {
	case <-finished:
	case <-timeout:
	case <-ctx.Done():
		interrupted = true
		stopSignals()
	}
	r.stop()
	<-finished
	elapsed := time.Since(r.start)
	stopProgress()
	rep := r.report(elapsed)
	rep.Interrupted = interrupted
	rep.BenchCPUSeconds = processCPU() - cpuBefore
	after := readServerStats(r.target, r.cfg.serverPID)
	rep.Server = serverReportOf(before, after, elapsed, rep.Count)
	if r.hold != nil && r.cfg.release && !interrupted {
		rep.Hold.Release = r.releaseHeld()
	}
	return rep, nil
}

// preflight inspects a lock of the run, so that a wrong URL or key is one
// clear error rather than a report full of failures.
func (r *benchRun) preflight() error {
	c := newBenchConn(r.target)
	defer c.close()
	st, body, err := c.do("GET", r.lockPath("preflight", ""), nil, 10*time.Second)
	if err != nil {
		return fmt.Errorf("bench: cannot reach the server at %s: %w", r.cfg.url, err)
	}
	if st != 200 {
		return fmt.Errorf("bench: the server at %s answered %d %s: %s", r.cfg.url, st, errorCode(st, body, nil), body)
	}
	return nil
}

// startProgress prints a progress line on w once a second: overwriting one
// line if w is a terminal, one line per second with --progress otherwise.
func (r *benchRun) startProgress(w io.Writer) (stop func()) {
	tty := isTerminal(w)
	if !tty && !r.cfg.progress {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
			}
			n := r.done.Load()
			line := fmt.Sprintf("%s %3.0fs: %s %s/s, %s total, %s errors", r.cfg.workload, time.Since(r.start).Seconds(),
				commas(n-last), r.unit(), commas(n), commas(r.failures.Load()))
			if r.hold != nil {
				line = fmt.Sprintf("hold %3.0fs: %s leases/s, %s of %s held, %s errors", time.Since(r.start).Seconds(),
					commas(n-last), commas(n), commas(int64(r.cfg.leases)), commas(r.failures.Load()))
			}
			last = n
			if tty {
				fmt.Fprintf(w, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(w, line)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// unit names what the run counts.
func (r *benchRun) unit() string {
	switch r.cfg.workload {
	case "contended":
		return "handoffs"
	case "hold":
		return "leases"
	}
	return "cycles"
}

// benchWorker is one client: its connection, its own histograms and error
// counts (merged at the end, so recording needs no synchronization).
type benchWorker struct {
	r     *benchRun
	id    int
	conn  *benchConn
	sess  *benchSession // with --protocol session
	hists [numBenchOps]*histogram
	fails [numBenchOps]int64
	errs  map[string]int64 // by error code
	path  []byte           // scratch: a lease's path
	// contended: the grants this client got, in order.
	grants []grantRecord
}

// holder is the worker's holder_id.
func (w *benchWorker) holder() string { return fmt.Sprintf("bench-%s-%d", w.r.runID, w.id) }

// call sends one request of kind op and records its latency if it
// succeeded (200), or its error code if not. After a network error it
// pauses a little, so that a dead server is not spun on.
func (w *benchWorker) call(op benchOp, method string, path, body []byte, wait time.Duration) (resp []byte, ok bool) {
	t0 := time.Now()
	st, resp, err := w.conn.do(method, path, body, wait+benchTimeout)
	return w.record(op, time.Since(t0), err == nil && st == 200, st, resp, err)
}

// record counts one request of kind op that took d: its latency if it
// succeeded, else its error code (from status st, answer resp or err).
// After a network error it pauses a little, so that a dead server is not
// spun on. It returns resp and ok.
func (w *benchWorker) record(op benchOp, d time.Duration, ok bool, st int, resp []byte, err error) ([]byte, bool) {
	w.r.requests.Add(1)
	if ok {
		h := w.hists[op]
		if h == nil {
			h = new(histogram)
			w.hists[op] = h
		}
		h.record(d)
		return resp, true
	}
	w.fails[op]++
	w.errs[errorCode(st, resp, err)]++
	w.r.failures.Add(1)
	if err != nil {
		select {
		case <-w.r.stopped:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return resp, false
}

// leasePath sets w.path to "/v1/leases/ID" + suffix for the lease_id in an
// acquire's answer, and reports whether there was one.
func (w *benchWorker) leasePath(resp []byte, suffix string) bool {
	id := jsonField(resp, `"lease_id"`)
	w.path = append(appendPathEscaped(append(w.path[:0], "/v1/leases/"...), id), suffix...)
	return len(id) > 0
}

// appendPathEscaped appends s to b escaped as one path segment.
func appendPathEscaped[S string | []byte](b []byte, s S) []byte {
	const hex = "0123456789ABCDEF"
	for i := range len(s) {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b = append(b, c)
		default:
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return b
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
