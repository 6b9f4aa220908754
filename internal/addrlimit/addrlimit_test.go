package addrlimit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var start = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// take calls Allow n times at now and returns how many were allowed.
func take(l *Limiter, addr string, now time.Time, n int) int {
	ok := 0
	for range n {
		if a, _ := l.Allow(addr, now); a {
			ok++
		}
	}
	return ok
}

func TestBurstThenRefill(t *testing.T) {
	l := &Limiter{Burst: 20, Per: 10 * time.Second}
	if got := take(l, "192.0.2.1:5000", start, 25); got != 20 {
		t.Fatalf("allowed %d of 25 at once, want the burst, 20", got)
	}
	ok, retry := l.Allow("192.0.2.1:5001", start)
	if ok || retry != 500*time.Millisecond {
		t.Errorf("Allow after the burst = %v, %v; want false, 500ms (20 per 10s)", ok, retry)
	}
	// 20 per 10 s is one per 500 ms.
	if got := take(l, "192.0.2.1:5000", start.Add(time.Second), 5); got != 2 {
		t.Errorf("allowed %d after 1s, want 2", got)
	}
	if got := take(l, "192.0.2.1:5000", start.Add(time.Hour), 25); got != 20 {
		t.Errorf("allowed %d after an hour, want 20: a bucket holds at most the burst", got)
	}
}

func TestAddressesApart(t *testing.T) {
	l := &Limiter{Burst: 3, Per: time.Minute}
	for _, c := range []struct {
		addr string
		want int
	}{
		{"192.0.2.1:1", 3},
		{"192.0.2.1:2", 0},          // same host, other port
		{"192.0.2.2:1", 3},          // another host
		{"[2001:db8::1]:1", 3},      // an IPv6 host
		{"[2001:db8::2]:1", 0},      // same /64
		{"[2001:db8:0:1::1]:1", 3},  // another /64
		{"[::ffff:192.0.2.2]:1", 0}, // 192.0.2.2 mapped into IPv6
		{"garbage", 3},
		{"more garbage", 0}, // unparsable addresses share a bucket
	} {
		if got := take(l, c.addr, start, 3); got != c.want {
			t.Errorf("%s: allowed %d of 3, want %d", c.addr, got, c.want)
		}
	}
}

func TestBoundedTable(t *testing.T) {
	l := &Limiter{Burst: 1, Per: time.Minute, MaxAddrs: 10}
	for i := range 10 {
		take(l, fmt.Sprintf("192.0.2.%d:1", i), start, 1)
	}
	// The table is full of limited addresses: newcomers share one bucket.
	if got := take(l, "198.51.100.1:1", start, 1) + take(l, "198.51.100.2:1", start, 1); got != 1 {
		t.Errorf("two newcomers to a full table: allowed %d, want 1 (the overflow bucket)", got)
	}
	if len(l.buckets) != 10 {
		t.Errorf("table has %d buckets, want at most 10", len(l.buckets))
	}
	// Once the old buckets have refilled they are forgotten, and a
	// newcomer gets its own again.
	later := start.Add(time.Minute)
	if got := take(l, "198.51.100.3:1", later, 1); got != 1 {
		t.Errorf("newcomer after the table refilled: allowed %d, want 1", got)
	}
	if len(l.buckets) != 1 {
		t.Errorf("table has %d buckets after the sweep, want 1", len(l.buckets))
	}
}

// TestConcurrent checks that concurrent callers share the burst exactly.
func TestConcurrent(t *testing.T) {
	l := &Limiter{Burst: 100, Per: time.Hour}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		n  int
	)
	for range 8 {
		wg.Go(func() {
			got := take(l, "192.0.2.9:1", start, 50)
			mu.Lock()
			n += got
			mu.Unlock()
		})
	}
	wg.Wait()
	if n != 100 {
		t.Errorf("8×50 concurrent attempts: allowed %d, want the burst, 100", n)
	}
}
