package sqlite

import (
	"time"

	"github.com/dlmhq/dlm"
)

// dueIndex files each lock with holders or waiters under the slot of time
// its earliest expiry or deadline falls in, so that the sweeper's reads
// (DueLocks, NextDue) look at the slots and the locks due soonest, not at
// every lock.
type dueIndex map[int64]map[dlm.Key]int64 // slot → lock → its due time (unix ns)

// dueSlot is the span of one slot: few slots for hours of TTLs, few locks
// in each.
const dueSlot = int64(100 * time.Millisecond)

func (d dueIndex) add(k dlm.Key, t int64) {
	m := d[t/dueSlot]
	if m == nil {
		m = map[dlm.Key]int64{}
		d[t/dueSlot] = m
	}
	m[k] = t
}

func (d dueIndex) remove(k dlm.Key, t int64) {
	if m := d[t/dueSlot]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(d, t/dueSlot)
		}
	}
}

// next returns the earliest due time, or false if nothing is due ever.
func (d dueIndex) next() (int64, bool) {
	first, ok := int64(0), false
	for slot := range d {
		if !ok || slot < first {
			first, ok = slot, true
		}
	}
	if !ok {
		return 0, false
	}
	t := int64(0)
	for _, at := range d[first] {
		if t == 0 || at < t {
			t = at
		}
	}
	return t, true
}

// dueBy returns up to limit locks due at or before t.
func (d dueIndex) dueBy(t int64, limit int) []dlm.Key {
	var keys []dlm.Key
	for slot, m := range d {
		if slot > t/dueSlot {
			continue
		}
		for k, at := range m {
			if at <= t {
				keys = append(keys, k)
				if len(keys) == limit {
					return keys
				}
			}
		}
	}
	return keys
}
