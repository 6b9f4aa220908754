package dlmhttp_test

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// BenchmarkLockPathWatchers measures what open watchers cost the lock path:
// one client runs acquire+release cycles, one after the other, while 0 or
// 500 watchers are connected that see every one of its events and read
// them as they come. One op is one cycle; p50-ms and p99-ms are the
// cycle's latency, cpu-ms/cycle the CPU time the process (server and
// clients) spent per cycle. Issue 17: with 500 watchers p50 must stay within 2x of
// its value without them.
//
// The watchers read their sockets and answer pings but parse no more of
// the frames than that: what they cost the process is a client's, not the
// server's, and real watchers run elsewhere.
//
//	go test -run XXX -bench LockPathWatchers -benchtime 2000x ./http/
func BenchmarkLockPathWatchers(b *testing.B) {
	for _, n := range []int{0, 500} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			s := testserver.New(b, nil)
			var ended atomic.Int64
			for range n {
				rawWatch(b, s, &ended)
			}
			cycles := make([]time.Duration, 0, b.N)
			body := map[string]any{"holder_id": "bench"}
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				status, resp, err := post(s, "POST", "/v1/locks/path/acquire", body)
				if err != nil || status != 200 {
					b.Fatalf("acquire: %d %s %v", status, resp, err)
				}
				var l struct {
					LeaseID string `json:"lease_id"`
				}
				json.Unmarshal(resp, &l)
				if status, resp, err := post(s, "DELETE", "/v1/leases/"+l.LeaseID, nil); err != nil || status != 200 {
					b.Fatalf("release: %d %s %v", status, resp, err)
				}
				cycles = append(cycles, time.Since(start))
			}
			b.StopTimer()
			cpu := cpuTime(b) - cpu0
			if e := ended.Load(); e > 0 {
				b.Fatalf("%d of %d watchers ended during the run", e, n)
			}
			slices.Sort(cycles)
			b.ReportMetric(float64(cycles[len(cycles)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(cycles[len(cycles)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/cycle")
		})
	}
}

// cpuTime returns the CPU time this process has used, server and clients.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawWatch opens a watch of every event of s's tenant and reads it until it
// ends, answering pings, and then counts it in ended.
func rawWatch(b *testing.B, s *testserver.Server, ended *atomic.Int64) {
	c, err := net.Dial("tcp", s.HTTP.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /v1/watch HTTP/1.1\r\nHost: dlm\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", s.TenantKey)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("watch: %v %v", resp, err)
	}
	go func() {
		defer ended.Add(1)
		var hdr [8]byte
		var payload []byte
		for {
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return
			}
			n := uint64(hdr[1] & 0x7f)
			switch n {
			case 126:
				io.ReadFull(br, hdr[:2])
				n = uint64(binary.BigEndian.Uint16(hdr[:2]))
			case 127:
				io.ReadFull(br, hdr[:8])
				n = binary.BigEndian.Uint64(hdr[:8])
			}
			payload = slices.Grow(payload[:0], int(n))[:n]
			if _, err := io.ReadFull(br, payload); err != nil {
				return
			}
			switch hdr[0] & 0x0f {
			case 0x9: // ping: pong with the same payload, masked (zero key)
				c.Write(append([]byte{0x8a, 0x80 | byte(n), 0, 0, 0, 0}, payload...))
			case 0x8: // close
				return
			}
		}
	}()
}
