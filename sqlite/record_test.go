package sqlite

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

// TestRecordTerms checks that a record carries lease terms, multi-lock
// waiters and lock-delays, and that it is the record of the same rows
// without them followed by the extension: a record written before the
// extension existed reads as rows without terms.
func TestRecordTerms(t *testing.T) {
	at := time.Unix(1700000000, 123).UTC()
	k := dlm.Key{Namespace: "t", Name: "a"}
	terms := dlm.Terms{Limit: 3, LockDelay: time.Second, MaxHold: time.Hour}
	lease := dlm.Lease{ID: "l", Tenant: "t", Key: k, Mode: dlm.Shared, HolderID: "h", Token: 7, TTL: time.Minute,
		AcquiredAt: at, ExpiresAt: at.Add(time.Minute), RequestedTTL: time.Minute, Terms: terms}
	waiter := dlm.Waiter{ID: "w", Tenant: "t", Key: k, Mode: dlm.Exclusive, Seq: 2, HolderID: "h", TTL: time.Minute,
		Ticket: "x", QueuedAt: at, Deadline: at.Add(time.Minute), Terms: dlm.Terms{MaxHold: time.Hour},
		Group: "w", GroupKeys: []dlm.Key{k, {Name: "global"}}}
	o := newOverlay()
	o.granted = []dlm.Lease{lease}
	o.ended = []dlm.EndedLease{{Lease: lease, Reason: dlm.ForceReleased, EndedAt: at}}
	o.queued = []dlm.Waiter{waiter}
	o.delays[k] = at.Add(time.Second)
	o.delays[dlm.Key{Namespace: "t", Name: "cleared"}] = time.Time{}

	got := newOverlay()
	if err := decodeRecord(encodeRecord(nil, o), got); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{{"granted", got.granted, o.granted}, {"ended", got.ended, o.ended}, {"queued", got.queued, o.queued}, {"delays", got.delays, o.delays}} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %+v, want %+v", c.what, c.got, c.want)
		}
	}

	plain := newOverlay()
	plain.granted = []dlm.Lease{lease}
	plain.granted[0].Terms = dlm.Terms{}
	plain.ended = []dlm.EndedLease{{Lease: plain.granted[0], Reason: dlm.ForceReleased, EndedAt: at}}
	plain.queued = []dlm.Waiter{waiter}
	plain.queued[0].Terms, plain.queued[0].Group, plain.queued[0].GroupKeys = dlm.Terms{}, "", nil
	old := encodeRecord(nil, plain)
	if full := encodeRecord(nil, o); !bytes.HasPrefix(full, old) || len(full) == len(old) {
		t.Errorf("the record with terms does not extend the one without: %x, %x", full, old)
	}
	got = newOverlay()
	if err := decodeRecord(old, got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.granted, plain.granted) || !reflect.DeepEqual(got.queued, plain.queued) || len(got.delays) != 0 {
		t.Errorf("record without terms read as %+v, %+v, %v", got.granted, got.queued, got.delays)
	}
}
