package sqlite

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/dlmhq/dlm"
)

// A journal record is the rows of one batch (an overlay's lists), encoded
// compactly: varints and length-prefixed strings, in a fixed order.
//
// A batch that carries lock terms (dlm.Terms), multi-lock waiters or
// lock-delays ends its record with an extension: the lock-delays set or
// cleared, then the terms of each granted and ended lease and the terms
// and group of each queued waiter, in the order of those lists. A batch
// without any is written as records were before the extension existed, so
// those records read the same way and cost no more bytes.

func encodeRecord(buf []byte, o *overlay) []byte {
	e := encoder{buf: buf[:0]}
	e.uint(uint64(len(o.tokens)))
	for k, t := range o.tokens {
		e.key(k)
		e.int(t)
	}
	e.uint(uint64(len(o.granted)))
	for i := range o.granted {
		e.lease(&o.granted[i])
	}
	e.uint(uint64(len(o.renewed)))
	for i := range o.renewed {
		l := &o.renewed[i]
		e.str(l.ID)
		e.int(int64(l.TTL))
		e.time(l.ExpiresAt)
	}
	e.uint(uint64(len(o.ended)))
	for i := range o.ended {
		x := &o.ended[i]
		e.lease(&x.Lease)
		e.uint(uint64(x.Reason))
		e.time(x.EndedAt)
	}
	e.uint(uint64(len(o.queued)))
	for i := range o.queued {
		w := &o.queued[i]
		e.str(w.ID)
		e.str(w.Tenant)
		e.key(w.Key)
		e.int(w.Seq)
		e.uint(uint64(w.Mode))
		e.str(w.HolderID)
		e.int(int64(w.TTL))
		e.str(w.IdempotencyKey)
		e.str(w.Ticket)
		e.time(w.QueuedAt)
		e.time(w.Deadline)
	}
	e.uint(uint64(len(o.retaken)))
	for i := range o.retaken {
		w := &o.retaken[i]
		e.str(w.ID)
		e.str(w.Ticket)
		e.time(w.Deadline)
	}
	e.uint(uint64(len(o.dequeued)))
	for _, id := range o.dequeued {
		e.str(id)
	}
	e.uint(uint64(len(o.events)))
	for i := range o.events {
		ev := &o.events[i]
		e.int(ev.ID)
		e.uint(uint64(ev.Type))
		e.key(ev.Key)
		e.str(ev.HolderID)
		e.uint(uint64(ev.Mode))
		e.int(ev.Token)
		e.time(ev.At)
	}
	if o.extended() {
		e.extension(o)
	}
	return e.buf
}

// extended reports whether o has anything for the extension.
func (o *overlay) extended() bool {
	if len(o.delays) > 0 {
		return true
	}
	for i := range o.granted {
		if o.granted[i].Terms != (dlm.Terms{}) {
			return true
		}
	}
	for i := range o.ended {
		if o.ended[i].Terms != (dlm.Terms{}) {
			return true
		}
	}
	for i := range o.queued {
		if w := &o.queued[i]; w.Terms != (dlm.Terms{}) || w.Group != "" {
			return true
		}
	}
	return false
}

func (e *encoder) extension(o *overlay) {
	e.uint(uint64(len(o.delays)))
	for k, t := range o.delays {
		e.key(k)
		// 0 for a lock-delay cleared: none ends at the epoch.
		var n int64
		if !t.IsZero() {
			n = nanos(t)
		}
		e.int(n)
	}
	for i := range o.granted {
		e.terms(o.granted[i].Terms)
	}
	for i := range o.ended {
		e.terms(o.ended[i].Terms)
	}
	for i := range o.queued {
		w := &o.queued[i]
		e.terms(w.Terms)
		e.str(w.Group)
		e.uint(uint64(len(w.GroupKeys)))
		for _, k := range w.GroupKeys {
			e.key(k)
		}
	}
}

func (e *encoder) terms(t dlm.Terms) {
	e.uint(uint64(t.Limit))
	e.int(int64(t.LockDelay))
	e.int(int64(t.MaxHold))
}

// decodeRecord adds the rows of record p to o.
func decodeRecord(p []byte, o *overlay) error {
	d := decoder{p: p}
	granted, ended, queued := len(o.granted), len(o.ended), len(o.queued)
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		k := d.key()
		o.tokens[k] = d.int()
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		o.granted = append(o.granted, d.lease())
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		o.renewed = append(o.renewed, dlm.Lease{ID: d.str(), TTL: time.Duration(d.int()), ExpiresAt: d.time()})
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		o.ended = append(o.ended, dlm.EndedLease{Lease: d.lease(), Reason: dlm.EndReason(d.uint()), EndedAt: d.time()})
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		o.queued = append(o.queued, dlm.Waiter{
			ID: d.str(), Tenant: d.str(), Key: d.key(), Seq: d.int(), Mode: dlm.Mode(d.uint()),
			HolderID: d.str(), TTL: time.Duration(d.int()), IdempotencyKey: d.str(), Ticket: d.str(),
			QueuedAt: d.time(), Deadline: d.time(),
		})
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		o.retaken = append(o.retaken, dlm.Waiter{ID: d.str(), Ticket: d.str(), Deadline: d.time()})
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		o.dequeued = append(o.dequeued, d.str())
	}
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		o.events = append(o.events, dlm.Event{
			ID: d.int(), Type: dlm.EventType(d.uint()), Key: d.key(), HolderID: d.str(),
			Mode: dlm.Mode(d.uint()), Token: d.int(), At: d.time(),
		})
	}
	if d.err == nil && len(d.p) != 0 {
		d.extension(o, granted, ended, queued)
	}
	if d.err == nil && len(d.p) != 0 {
		d.err = errors.New("trailing bytes")
	}
	return d.err
}

// extension reads what encoder.extension wrote into o, whose lists of this
// record start at granted, ended and queued.
func (d *decoder) extension(o *overlay, granted, ended, queued int) {
	for n := d.uint(); n > 0 && d.err == nil; n-- {
		k := d.key()
		var t time.Time
		if n := d.int(); n != 0 {
			t = fromNanos(n)
		}
		o.delays[k] = t
	}
	for i := range o.granted[granted:] {
		o.granted[granted+i].Terms = d.terms()
	}
	for i := range o.ended[ended:] {
		o.ended[ended+i].Terms = d.terms()
	}
	for i := range o.queued[queued:] {
		w := &o.queued[queued+i]
		w.Terms, w.Group = d.terms(), d.str()
		n := d.uint()
		if n > uint64(len(d.p)) { // each key takes at least two bytes
			d.fail()
			return
		}
		for ; n > 0; n-- {
			w.GroupKeys = append(w.GroupKeys, d.key())
		}
	}
}

func (d *decoder) terms() dlm.Terms {
	return dlm.Terms{Limit: int(d.uint()), LockDelay: time.Duration(d.int()), MaxHold: time.Duration(d.int())}
}

type encoder struct{ buf []byte }

func (e *encoder) uint(v uint64)    { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) int(v int64)      { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) time(t time.Time) { e.int(t.UnixNano()) }
func (e *encoder) key(k dlm.Key)    { e.str(k.Namespace); e.str(k.Name) }
func (e *encoder) str(s string)     { e.uint(uint64(len(s))); e.buf = append(e.buf, s...) }
func (e *encoder) lease(l *dlm.Lease) {
	e.str(l.ID)
	e.str(l.Tenant)
	e.key(l.Key)
	e.uint(uint64(l.Mode))
	e.str(l.HolderID)
	e.int(l.Token)
	e.int(int64(l.TTL))
	e.time(l.AcquiredAt)
	e.time(l.ExpiresAt)
	e.str(l.IdempotencyKey)
}

// decoder reads what encoder wrote; after the first error every read
// returns a zero value and err stays set.
type decoder struct {
	p   []byte
	err error
}

var errShortRecord = errors.New("journal record is cut short")

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.p)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.p)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.p = d.p[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uint()
	if n > uint64(len(d.p)) {
		d.fail()
		return ""
	}
	s := string(d.p[:n])
	d.p = d.p[n:]
	return s
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShortRecord
	}
	d.p = nil
}

func (d *decoder) time() time.Time { return fromNanos(d.int()) }
func (d *decoder) key() dlm.Key    { return dlm.Key{Namespace: d.str(), Name: d.str()} }

// lease reads what encoder.lease wrote. A granted lease is recorded as it
// was granted (renewals are recorded on their own), so the TTL it asked for
// is its TTL and needs no bytes of its own; an ended lease no longer needs
// it. Records written before RequestedTTL existed read the same way.
func (d *decoder) lease() dlm.Lease {
	l := dlm.Lease{
		ID: d.str(), Tenant: d.str(), Key: d.key(), Mode: dlm.Mode(d.uint()), HolderID: d.str(),
		Token: d.int(), TTL: time.Duration(d.int()), AcquiredAt: d.time(), ExpiresAt: d.time(),
		IdempotencyKey: d.str(),
	}
	l.RequestedTTL = l.TTL
	return l
}
