package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// benchReport is the outcome of a run; --json prints it as one object.
type benchReport struct {
	Workload    string  `json:"workload"`
	RunID       string  `json:"run_id"`
	Prefix      string  `json:"prefix"` // of every lock name the run used
	URL         string  `json:"url"`
	Clients     int     `json:"clients"`
	Protocol    string  `json:"protocol"`           // http or session
	Pipeline    int     `json:"pipeline,omitempty"` // session: workloads in flight per client
	Seconds     float64 `json:"seconds"`
	Interrupted bool    `json:"interrupted,omitempty"`
	Aborted     string  `json:"aborted,omitempty"` // why the run ended early

	// Unit is what the workload counts: cycles (uncontended, mixed: acquire
	// to release), handoffs (contended: grants) or leases (hold).
	Unit      string  `json:"unit"`
	Count     int64   `json:"count"`
	PerSecond float64 `json:"per_second"`

	Requests          int64                `json:"requests"`
	RequestsPerSecond float64              `json:"requests_per_second"`
	Ops               map[string]*opReport `json:"ops"`
	Errors            map[string]int64     `json:"errors"` // by code: the API's, http_NNN or network
	ErrorCount        int64                `json:"error_count"`

	Contended *contendedReport `json:"contended,omitempty"`
	Hold      *holdReport      `json:"hold,omitempty"`
	Mixed     *mixedReport     `json:"mixed,omitempty"`

	Server          *serverReport `json:"server,omitempty"`
	BenchCPUSeconds float64       `json:"bench_cpu_seconds"`
}

// opReport is the latency of the successful requests of one kind.
type opReport struct {
	Count     int64   `json:"count"`
	PerSecond float64 `json:"per_second"`
	Errors    int64   `json:"errors"`
	MeanMs    float64 `json:"mean_ms"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p99_9_ms"`
	MaxMs     float64 `json:"max_ms"`
}

type contendedReport struct {
	LongestWaitMs float64 `json:"longest_wait_ms"`
	// Grants per client: equal turns show the queue is fair.
	GrantsMin int64 `json:"grants_min"`
	GrantsMax int64 `json:"grants_max"`
	// MostGrantsDuringWait is the most grants to other clients while one
	// client waited (sent its acquire until it was granted). Under strict
	// FIFO it is at most FIFOBound, clients-1, plus the grants made while
	// a request was in transit; a queue that lets newcomers jump ahead
	// shows much more.
	MostGrantsDuringWait int64 `json:"most_grants_during_wait"`
	FIFOBound            int64 `json:"fifo_bound"`
	WaitsAboveBound      int64 `json:"waits_above_bound"`
	Waits                int64 `json:"waits"`
}

type holdReport struct {
	Leases          int            `json:"leases"` // asked for
	Held            int64          `json:"held"`
	TTLMs           int64          `json:"ttl_ms"`
	First10PerSec   float64        `json:"first_10pct_per_second"`
	Last10PerSecond float64        `json:"last_10pct_per_second"`
	Release         *releaseReport `json:"release,omitempty"`
}

type releaseReport struct {
	Released  int64   `json:"released"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

type mixedReport struct {
	Names       int     `json:"names"`
	SharedRatio float64 `json:"shared_ratio"`
	Renews      int     `json:"renews"`
}

// serverReport is the server process's memory and CPU over the run.
type serverReport struct {
	Source         string  `json:"source"`
	RSSBeforeBytes float64 `json:"rss_before_bytes"`
	RSSAfterBytes  float64 `json:"rss_after_bytes"`
	CPUSeconds     float64 `json:"cpu_seconds,omitempty"`
	CPUCores       float64 `json:"cpu_cores,omitempty"` // CPU seconds per second of the run
	// CPUPerUnitMicros is the server's CPU time per unit of the workload
	// (a cycle, a grant, a lease), in microseconds: the cost that a ratio
	// to the null server compares (dlm bench null).
	CPUPerUnitMicros float64 `json:"cpu_us_per_unit,omitempty"`
}

func serverReportOf(before, after serverStats, elapsed time.Duration, units int64) *serverReport {
	if before.source == "" || after.source == "" {
		return nil
	}
	s := &serverReport{Source: after.source, RSSBeforeBytes: before.rss, RSSAfterBytes: after.rss}
	if before.cpu >= 0 && after.cpu >= 0 {
		s.CPUSeconds = after.cpu - before.cpu
		s.CPUCores = s.CPUSeconds / elapsed.Seconds()
		if units > 0 {
			s.CPUPerUnitMicros = math.Round(s.CPUSeconds/float64(units)*1e7) / 10
		}
	}
	return s
}

func ms(d time.Duration) float64 { return math.Round(d.Seconds()*1e6) / 1e3 }

// report merges the workers' records.
func (r *benchRun) report(elapsed time.Duration) *benchReport {
	secs := elapsed.Seconds()
	rep := &benchReport{
		Workload: r.cfg.workload, RunID: r.runID, Prefix: r.prefix, URL: r.cfg.url, Clients: r.cfg.clients,
		Protocol: r.cfg.protocol, Seconds: math.Round(secs*1000) / 1000, Unit: r.unit(), Count: r.done.Load(),
		Requests: r.requests.Load(), Ops: map[string]*opReport{}, Errors: map[string]int64{}, ErrorCount: r.failures.Load(),
	}
	if r.cfg.pipeline > 1 {
		rep.Pipeline = r.cfg.pipeline
	}
	rep.PerSecond = float64(rep.Count) / secs
	rep.RequestsPerSecond = float64(rep.Requests) / secs
	if p := r.abort.Load(); p != nil {
		rep.Aborted = *p
	}
	for op := range numBenchOps {
		var h histogram
		var fails int64
		for _, w := range r.workers {
			if w.hists[op] != nil {
				h.merge(w.hists[op])
			}
			fails += w.fails[op]
		}
		if h.n == 0 && fails == 0 {
			continue
		}
		rep.Ops[benchOpNames[op]] = &opReport{
			Count: int64(h.n), PerSecond: float64(h.n) / secs, Errors: fails, MeanMs: ms(h.mean()),
			P50Ms: ms(h.quantile(0.5)), P99Ms: ms(h.quantile(0.99)), P999Ms: ms(h.quantile(0.999)), MaxMs: ms(h.max),
		}
	}
	for _, w := range r.workers {
		for code, n := range w.errs {
			rep.Errors[code] += n
		}
	}
	switch r.cfg.workload {
	case "contended":
		rep.Contended = r.fairness()
	case "hold":
		rep.Hold = r.holdReport()
	case "mixed":
		rep.Mixed = &mixedReport{Names: r.cfg.names, SharedRatio: r.cfg.sharedRatio, Renews: r.cfg.renews}
	}
	return rep
}

// fairness sums up the contended run's grants.
func (r *benchRun) fairness() *contendedReport {
	c := &contendedReport{FIFOBound: int64(r.cfg.clients - 1), GrantsMin: math.MaxInt64}
	for _, w := range r.workers {
		if h := w.hists[opAcquire]; h != nil {
			c.LongestWaitMs = max(c.LongestWaitMs, ms(h.max))
		}
	}
	// Rank every grant by its token, the order the server granted them in.
	var all []grantRecord
	for _, w := range r.workers {
		all = append(all, w.grants...)
		c.GrantsMin = min(c.GrantsMin, int64(len(w.grants)))
		c.GrantsMax = max(c.GrantsMax, int64(len(w.grants)))
	}
	slices.SortFunc(all, func(a, b grantRecord) int { return cmp.Compare(a.token, b.token) })
	rank := make(map[int64]int, len(all))
	for i, g := range all {
		rank[g.token] = i
	}
	// For each wait, count the grants between the client's previous grant
	// and this one that reached their client after this acquire was sent:
	// grants that may have been made while it queued.
	for _, w := range r.workers {
		prev := -1
		for _, g := range w.grants {
			cur := rank[g.token]
			var n int64
			for _, o := range all[prev+1 : cur] {
				if o.recv > g.sent {
					n++
				}
			}
			c.Waits++
			c.MostGrantsDuringWait = max(c.MostGrantsDuringWait, n)
			if n > c.FIFOBound {
				c.WaitsAboveBound++
			}
			prev = cur
		}
	}
	if c.GrantsMin == math.MaxInt64 {
		c.GrantsMin = 0
	}
	return c
}

func (r *benchRun) holdReport() *holdReport {
	h := r.hold
	n := r.done.Load()
	rep := &holdReport{Leases: r.cfg.leases, Held: n, TTLMs: r.cfg.ttl.Milliseconds()}
	if m := n / 10; m > 0 {
		rep.First10PerSec = float64(m) / h.times[m-1].Seconds()
		if d := h.times[n-1] - h.times[n-1-m]; d > 0 {
			rep.Last10PerSecond = float64(m) / d.Seconds()
		}
	}
	return rep
}

// print writes the report for people.
func (rep *benchReport) print(w io.Writer) {
	proto := rep.Protocol
	if rep.Pipeline > 1 {
		proto = fmt.Sprintf("%s, %d in flight each", proto, rep.Pipeline)
	}
	fmt.Fprintf(w, "dlm bench %s: %d clients (%s), %.2fs, %s (lock names %s*)\n", rep.Workload, rep.Clients, proto, rep.Seconds, rep.URL, rep.Prefix)
	if rep.Interrupted {
		fmt.Fprintln(w, "interrupted: the numbers cover the run until then")
	}
	if rep.Aborted != "" {
		fmt.Fprintf(w, "stopped early: %s\n", rep.Aborted)
	}
	fmt.Fprintf(w, "throughput: %s %s/s (%s %s; %s requests, %s/s)\n", commasF(rep.PerSecond), rep.Unit, commas(rep.Count), rep.Unit,
		commas(rep.Requests), commasF(rep.RequestsPerSecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  op\tcount\trate/s\terrors\tmean\tp50\tp99\tp99.9\tmax\t")
	for _, name := range benchOpNames {
		o := rep.Ops[name]
		if o == nil {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, commas(o.Count), commasF(o.PerSecond), commas(o.Errors),
			fmtMs(o.MeanMs), fmtMs(o.P50Ms), fmtMs(o.P99Ms), fmtMs(o.P999Ms), fmtMs(o.MaxMs))
	}
	tw.Flush()
	if len(rep.Errors) == 0 {
		fmt.Fprintln(w, "errors: none")
	} else {
		var es []string
		for _, code := range slices.Sorted(maps.Keys(rep.Errors)) {
			es = append(es, fmt.Sprintf("%s %s", code, commas(rep.Errors[code])))
		}
		fmt.Fprintf(w, "errors: %s\n", strings.Join(es, ", "))
	}
	if c := rep.Contended; c != nil {
		fmt.Fprintf(w, "fairness: longest wait %s; grants per client min %s, max %s; at most %d grants to others during one wait (%d under strict FIFO; %d of %s waits above)\n",
			fmtMs(c.LongestWaitMs), commas(c.GrantsMin), commas(c.GrantsMax), c.MostGrantsDuringWait, c.FIFOBound, c.WaitsAboveBound, commas(c.Waits))
	}
	if h := rep.Hold; h != nil {
		fmt.Fprintf(w, "held: %s of %s leases (TTL %v); first 10%%: %s/s, last 10%%: %s/s\n", commas(h.Held), commas(int64(h.Leases)),
			time.Duration(h.TTLMs)*time.Millisecond, commasF(h.First10PerSec), commasF(h.Last10PerSecond))
		if r := h.Release; r != nil {
			fmt.Fprintf(w, "released: %s in %.2fs (%s/s)\n", commas(r.Released), r.Seconds, commasF(r.PerSecond))
		} else {
			fmt.Fprintln(w, "the leases are kept until they expire (--release ends them at the end of a run)")
		}
	}
	if m := rep.Mixed; m != nil {
		fmt.Fprintf(w, "mix: %d names, %.0f%% shared, %d renewals per lease\n", m.Names, 100*m.SharedRatio, m.Renews)
	}
	if s := rep.Server; s != nil {
		fmt.Fprintf(w, "server memory (RSS, from %s): %.1f MB before, %.1f MB after (%+.1f MB)\n", s.Source,
			s.RSSBeforeBytes/1e6, s.RSSAfterBytes/1e6, (s.RSSAfterBytes-s.RSSBeforeBytes)/1e6)
		if s.CPUSeconds > 0 {
			fmt.Fprintf(w, "server CPU: %.1fs (%.2f cores), %.1f µs per %s\n", s.CPUSeconds, s.CPUCores, s.CPUPerUnitMicros, rep.Unit)
		}
	} else {
		fmt.Fprintln(w, "server memory: unknown (the server has no /metrics; give --server-pid for a local one)")
	}
	fmt.Fprintf(w, "bench CPU: %.1fs (%.2f cores)\n", rep.BenchCPUSeconds, rep.BenchCPUSeconds/rep.Seconds)
}

// fmtMs formats milliseconds with about three significant digits.
func fmtMs(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 10:
		return fmt.Sprintf("%.2fms", v)
	case v < 100:
		return fmt.Sprintf("%.1fms", v)
	case v < 1000:
		return fmt.Sprintf("%.0fms", v)
	case v < 10000:
		return fmt.Sprintf("%.2fs", v/1000)
	}
	return fmt.Sprintf("%.1fs", v/1000)
}

// commas formats n with thousands separators: 1,234,567.
func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// commasF is commas of v rounded.
func commasF(v float64) string { return commas(int64(math.Round(v))) }
