// Package lograte keeps a repeated log line from flooding the disk: while
// a failure repeats (a full disk, a database that is down), the same
// message is written at most once per interval, and the line that is
// written says how many were held back since the last one.
package lograte

import (
	"sync"
	"time"
)

// Limiter decides, per message, whether a line may be written now. The
// zero value holds each message back for DefaultEvery. It is safe for
// concurrent use.
type Limiter struct {
	// Every is the least time between two lines of one message. Default
	// DefaultEvery.
	Every time.Duration

	mu   sync.Mutex
	last map[string]*entry
}

// DefaultEvery is Limiter's default interval.
const DefaultEvery = 10 * time.Second

type entry struct {
	at   time.Time
	held int
}

// Allow reports whether a line of msg may be written at now, and if so how
// many lines of msg were held back since the last one written. Callers
// pass a fixed message (not one that carries the error), so that the
// messages a Limiter tracks stay few.
func (l *Limiter) Allow(msg string, now time.Time) (held int, ok bool) {
	every := l.Every
	if every == 0 {
		every = DefaultEvery
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.last[msg]
	if e == nil {
		if l.last == nil {
			l.last = map[string]*entry{}
		}
		l.last[msg] = &entry{at: now}
		return 0, true
	}
	if now.Sub(e.at) < every {
		e.held++
		return 0, false
	}
	held, e.at, e.held = e.held, now, 0
	return held, true
}
