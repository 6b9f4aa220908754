package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// serverStats is what the bench could learn of the server process at one
// moment: its resident memory and the CPU time it has used.
type serverStats struct {
	source string // where the numbers came from; "" if nowhere
	rss    float64
	cpu    float64 // seconds, user and system; -1 if unknown
}

// readServerStats reads the server's /metrics (the Prometheus process
// collector), and else /proc/pid when pid is not 0.
func readServerStats(t *benchTarget, pid int) serverStats {
	if s, ok := metricsStats(t); ok {
		return s
	}
	if pid > 0 {
		if s, ok := procStats(pid); ok {
			return s
		}
	}
	return serverStats{cpu: -1}
}

// metricsStats reads process_resident_memory_bytes and
// process_cpu_seconds_total from GET /metrics.
func metricsStats(t *benchTarget) (serverStats, bool) {
	c := newBenchConn(t)
	defer c.close()
	st, body, err := c.do("GET", []byte("/metrics"), nil, 10*time.Second)
	if err != nil || st != 200 {
		return serverStats{}, false
	}
	s := serverStats{source: "/metrics process_resident_memory_bytes", rss: -1, cpu: -1}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			s.rss = v
		case "process_cpu_seconds_total":
			s.cpu = v
		}
	}
	return s, s.rss >= 0
}

// procStats reads VmRSS from /proc/pid/status and the CPU times from
// /proc/pid/stat.
func procStats(pid int) (serverStats, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return serverStats{}, false
	}
	s := serverStats{source: fmt.Sprintf("/proc/%d/status VmRSS", pid), rss: -1, cpu: -1}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err == nil {
				s.rss = kb * 1024
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// After "pid (comm) ", field 3 (state) comes first; utime and
		// stime are fields 14 and 15, in clock ticks of 1/100 s (USER_HZ
		// is 100 on every Linux the bench targets).
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				u, err1 := strconv.ParseFloat(f[11], 64)
				st, err2 := strconv.ParseFloat(f[12], 64)
				if err1 == nil && err2 == nil {
					s.cpu = (u + st) / 100
				}
			}
		}
	}
	return s, s.rss >= 0
}
