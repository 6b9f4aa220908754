// Package addrlimit limits how often one network address may do something,
// such as fail to authenticate, with a token bucket per address.
//
// Addresses are grouped as an attacker would have to spend them: an IPv4
// address alone, an IPv6 address by its /64, since one host is commonly
// given a whole /64. The table of buckets is bounded (MaxAddrs): once it is
// full of addresses that are all still limited, newcomers share one
// overflow bucket, so that memory stays bounded whatever the traffic.
package addrlimit

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults of a Limiter's zero fields.
const (
	// DefaultBurst and DefaultPer: 20 attempts per 10 s is far more than
	// a person mistyping a key or a client with a stale key retrying with
	// backoff, and far less than a scan.
	DefaultBurst = 20
	DefaultPer   = 10 * time.Second
	// DefaultMaxAddrs bounds the table: a bucket is about 100 bytes.
	DefaultMaxAddrs = 10_000
)

// Limiter holds a token bucket per address: each holds up to Burst tokens
// and refills at Burst per Per. The zero value uses the defaults. It is
// safe for concurrent use.
type Limiter struct {
	Burst    int           // default DefaultBurst
	Per      time.Duration // default DefaultPer
	MaxAddrs int           // default DefaultMaxAddrs

	mu       sync.Mutex
	buckets  map[netip.Prefix]*bucket
	overflow bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// Allow takes a token from the bucket of remoteAddr (host:port as in
// http.Request.RemoteAddr, or a bare IP) at now. It reports whether there
// was one and, if not, how long until there is. Addresses that do not
// parse share one bucket.
func (l *Limiter) Allow(remoteAddr string, now time.Time) (ok bool, retryAfter time.Duration) {
	burst, per, max := float64(l.Burst), l.Per, l.MaxAddrs
	if burst <= 0 {
		burst = DefaultBurst
	}
	if per <= 0 {
		per = DefaultPer
	}
	if max <= 0 {
		max = DefaultMaxAddrs
	}
	rate := burst / per.Seconds() // tokens per second
	key := prefix(remoteAddr)

	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if l.buckets == nil {
			l.buckets = map[netip.Prefix]*bucket{}
		}
		if len(l.buckets) >= max {
			l.sweep(now, burst, rate)
		}
		if len(l.buckets) < max {
			b = &bucket{tokens: burst, at: now}
			l.buckets[key] = b
		} else {
			b = &l.overflow
		}
	}
	if b.at.IsZero() { // the overflow bucket's first use
		b.tokens, b.at = burst, now
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// sweep forgets the buckets that have refilled: they are the same as new.
func (l *Limiter) sweep(now time.Time, burst, rate float64) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*rate >= burst {
			delete(l.buckets, k)
		}
	}
}

// prefix returns the group of addr: its IPv4 address, or its IPv6 /64.
func prefix(addr string) netip.Prefix {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}
