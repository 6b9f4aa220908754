package engine

import (
	"slices"
	"sync"

	"github.com/dlmhq/dlm"
)

// hub connects grants to the acquires parked on them. A parked acquire
// subscribes to the ID its lease will have; a grant committed here is
// delivered to it directly, and a grant that another process made (seen in
// the event log) makes it look in the store.
type hub struct {
	mu    sync.Mutex
	byID  map[string][]*subscription
	byKey map[dlm.Key][]*subscription
}

type subscription struct {
	id     string
	key    dlm.Key
	holder string
	mode   dlm.Mode
	lease  chan dlm.Lease // buffered: delivery never blocks
	check  chan struct{}  // buffered: "your grant may be in the store"
}

func (h *hub) init() {
	h.byID = map[string][]*subscription{}
	h.byKey = map[dlm.Key][]*subscription{}
}

func (h *hub) subscribe(id string, r dlm.Request) *subscription {
	s := &subscription{id: id, key: r.Key, holder: r.HolderID, mode: r.Mode,
		lease: make(chan dlm.Lease, 1), check: make(chan struct{}, 1)}
	h.mu.Lock()
	h.byID[id] = append(h.byID[id], s)
	h.byKey[s.key] = append(h.byKey[s.key], s)
	h.mu.Unlock()
	return s
}

func (h *hub) unsubscribe(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	remove(h.byID, s.id, s)
	remove(h.byKey, s.key, s)
}

func remove[K comparable](m map[K][]*subscription, k K, s *subscription) {
	subs := slices.DeleteFunc(m[k], func(x *subscription) bool { return x == s })
	if len(subs) == 0 {
		delete(m, k)
	} else {
		m[k] = subs
	}
}

// empty reports whether no acquire is parked here.
func (h *hub) empty() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byID) == 0
}

// deliver hands l to whoever waits for it here, if anybody does.
func (h *hub) deliver(l dlm.Lease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.byID[l.ID] {
		select {
		case s.lease <- l:
		default: // already delivered once
		}
	}
}

// check asks the acquires parked on key for holder in mode to look whether
// their grant was made elsewhere. Events carry no lease IDs, so holder and
// mode narrow the wake-up down to the likely recipients.
func (h *hub) check(key dlm.Key, holder string, mode dlm.Mode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.byKey[key] {
		if s.holder == holder && s.mode == mode {
			select {
			case s.check <- struct{}{}:
			default:
			}
		}
	}
}
