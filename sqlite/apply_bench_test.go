package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

// BenchmarkApplyCycles measures what the applier costs per acquire+release
// cycle of the uncontended workload (64 clients, each on its own lock): one
// window of 64 cycles per SQLite transaction, each cycle an ended lease,
// two events and its lock's token. An op is one cycle; the variants write
// one kind of row only, or windows of 512 cycles.
func BenchmarkApplyCycles(b *testing.B) {
	for _, v := range []struct {
		name                  string
		window                int
		ended, events, tokens bool
	}{
		{"all/64", 64, true, true, true},
		{"all/512", 512, true, true, true},
		{"ended/64", 64, true, false, false},
		{"events/64", 64, false, true, false},
		{"tokens/64", 64, false, false, true},
	} {
		b.Run(v.name, func(b *testing.B) { benchApply(b, v.window, v.ended, v.events, v.tokens) })
	}
}

func benchApply(b *testing.B, window int, withEnded, withEvents, withTokens bool) {
	s := &Store{}
	if _, err := s.open(filepath.Join(b.TempDir(), "dlm.db")); err != nil {
		b.Fatal(err)
	}
	defer s.closeDBs()
	conn, err := s.wdb.Conn(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	w := newWriter(conn)
	t0 := time.Now()
	var lastEvent int64
	overlayFor := func(round int) *overlay {
		o := newOverlay()
		for c := range window {
			id := fmt.Sprintf("%06x%016x", round, c) // time-ordered, as engine IDs
			now := t0.Add(time.Duration(round) * time.Millisecond)
			k := dlm.Key{Namespace: "default", Name: fmt.Sprintf("bench/run/%d", c%64)}
			l := dlm.Lease{ID: id, Tenant: "default", Key: k, Mode: dlm.Exclusive, HolderID: fmt.Sprintf("worker-%d", c),
				Token: int64(round*window + c + 1), TTL: 30 * time.Second, AcquiredAt: now, ExpiresAt: now.Add(30 * time.Second)}
			if withEnded {
				o.granted = append(o.granted, l)
				o.ended = append(o.ended, dlm.EndedLease{Lease: l, Reason: dlm.Released, EndedAt: now})
			}
			if withTokens {
				o.tokens[k] = l.Token
			}
			if !withEvents {
				continue
			}
			lastEvent++
			o.events = append(o.events, dlm.Event{ID: lastEvent, Type: dlm.EventAcquired, Key: k, HolderID: l.HolderID, Mode: l.Mode, Token: l.Token, At: now})
			lastEvent++
			o.events = append(o.events, dlm.Event{ID: lastEvent, Type: dlm.EventReleased, Key: k, HolderID: l.HolderID, Mode: l.Mode, Token: l.Token, At: now})
		}
		return o
	}
	b.ResetTimer()
	for i := range (b.N + window - 1) / window {
		b.StopTimer()
		o := overlayFor(i)
		b.StartTimer()
		if err := w.apply([]applied{{seq: int64(i + 1), o: o}}, true); err != nil {
			b.Fatal(err)
		}
	}
}
