package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
)

// Each workload is a loop one worker runs until the run stops. Request
// bodies and lock paths are encoded once per worker; the loop writes only
// lease IDs into a reused path buffer.

// uncontended: acquire (try once) and release an exclusive lock on the
// worker's own name.
func (w *benchWorker) uncontended() {
	acquire := w.r.lockPath("u/"+strconv.Itoa(w.id), "/acquire")
	body := fmt.Appendf(nil, `{"holder_id":%q,"ttl_ms":%d}`, w.holder(), w.r.cfg.ttl.Milliseconds())
	for !w.r.stopping.Load() {
		resp, ok := w.call(opAcquire, "POST", acquire, body, 0)
		if !ok || !w.leasePath(resp, "") {
			continue
		}
		if _, ok := w.call(opRelease, "DELETE", w.path, nil, 0); ok {
			w.r.done.Add(1)
		}
	}
}

// grantRecord is one grant in the contended workload: its fencing token and
// when (since the start of the run) the acquire was sent and answered.
type grantRecord struct {
	token      int64
	sent, recv time.Duration
}

// contended: every worker queues for one name (blocking acquire) and
// releases it as soon as it is granted.
func (w *benchWorker) contended() {
	acquire := w.r.lockPath("c", "/acquire")
	body := fmt.Appendf(nil, `{"holder_id":%q,"ttl_ms":%d,"wait_ms":%d}`, w.holder(), w.r.cfg.ttl.Milliseconds(), w.r.cfg.wait.Milliseconds())
	for !w.r.stopping.Load() {
		sent := time.Since(w.r.start)
		resp, ok := w.call(opAcquire, "POST", acquire, body, w.r.cfg.wait)
		if !ok {
			continue
		}
		recv := time.Since(w.r.start)
		token, _ := strconv.ParseInt(string(jsonField(resp, `"fencing_token"`)), 10, 64)
		if !w.leasePath(resp, "") {
			continue
		}
		w.grants = append(w.grants, grantRecord{token, sent, recv})
		if _, ok := w.call(opRelease, "DELETE", w.path, nil, 0); ok {
			w.r.done.Add(1)
		}
	}
}

// holdState is what the hold workers share: the next lease to take, the
// IDs of those taken and when each was taken.
type holdState struct {
	next  atomic.Int64
	ids   []string        // by lease number; "" if not held
	times []time.Duration // the n-th lease held was held at times[n-1]
}

func newHoldState(n int) *holdState {
	return &holdState{ids: make([]string, n), times: make([]time.Duration, n)}
}

// holdLeases: acquire (try once) distinct names with a long TTL, and keep
// them.
func (w *benchWorker) holdLeases() {
	body := fmt.Appendf(nil, `{"holder_id":%q,"ttl_ms":%d}`, w.holder(), w.r.cfg.ttl.Milliseconds())
	w.hold(func(k int) ([]byte, bool) {
		return w.call(opAcquire, "POST", w.r.lockPath("h/"+strconv.Itoa(k), "/acquire"), body, 0)
	})
}

// hold takes the hold run's next lock names, with acquire, until they run
// out or the run stops, and records each lease taken.
func (w *benchWorker) hold(acquire func(k int) ([]byte, bool)) {
	h := w.r.hold
	for !w.r.stopping.Load() {
		k := int(h.next.Add(1) - 1)
		if k >= len(h.ids) {
			return
		}
		resp, ok := acquire(k)
		if !ok {
			if code := errorCode(0, resp, nil); code == "limit_exceeded" {
				w.r.fail("the server's limit on leases per tenant was reached (dlm serve --max-leases-per-tenant)")
			}
			continue
		}
		h.ids[k] = string(jsonField(resp, `"lease_id"`))
		n := w.r.done.Add(1)
		h.times[n-1] = time.Since(w.r.start)
	}
}

// releaseHeld releases the leases a hold run took, with all the workers.
func (r *benchRun) releaseHeld() *releaseReport {
	h := r.hold
	var next, released atomic.Int64
	start := time.Now()
	done := make(chan struct{})
	for _, w := range r.workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				k := int(next.Add(1) - 1)
				if k >= len(h.ids) {
					return
				}
				if h.ids[k] == "" {
					continue
				}
				w.path = appendPathEscaped(append(w.path[:0], "/v1/leases/"...), h.ids[k])
				if _, ok := w.call(opRelease, "DELETE", w.path, nil, 0); ok {
					released.Add(1)
				}
			}
		}()
	}
	for range r.workers {
		<-done
	}
	d := time.Since(start)
	return &releaseReport{Released: released.Load(), Seconds: d.Seconds(), PerSecond: float64(released.Load()) / d.Seconds()}
}

// mixed: acquire a random one of a few names, shared or exclusive, waiting
// for it; renew it; release it.
func (w *benchWorker) mixed() {
	cfg := w.r.cfg
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w.id)))
	paths := make([][]byte, cfg.names)
	for i := range paths {
		paths[i] = w.r.lockPath("m/"+strconv.Itoa(i), "/acquire")
	}
	ttl, wait := cfg.ttl.Milliseconds(), cfg.wait.Milliseconds()
	shared := fmt.Appendf(nil, `{"holder_id":%q,"mode":"shared","ttl_ms":%d,"wait_ms":%d}`, w.holder(), ttl, wait)
	exclusive := fmt.Appendf(nil, `{"holder_id":%q,"mode":"exclusive","ttl_ms":%d,"wait_ms":%d}`, w.holder(), ttl, wait)
	renew := fmt.Appendf(nil, `{"ttl_ms":%d}`, ttl)
	renewPath, releasePath := []byte{}, []byte{}
	for !w.r.stopping.Load() {
		op, body := opAcquireExclusive, exclusive
		if rng.Float64() < cfg.sharedRatio {
			op, body = opAcquireShared, shared
		}
		resp, ok := w.call(op, "POST", paths[rng.IntN(len(paths))], body, cfg.wait)
		if !ok || !w.leasePath(resp, "") {
			continue
		}
		releasePath = append(releasePath[:0], w.path...)
		renewPath = append(append(renewPath[:0], w.path...), "/renew"...)
		for range cfg.renews {
			w.call(opRenew, "POST", renewPath, renew, 0)
		}
		if _, ok := w.call(opRelease, "DELETE", releasePath, nil, 0); ok {
			w.r.done.Add(1)
		}
	}
}
