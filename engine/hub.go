package engine

import (
	"sync"

	"github.com/dlmhq/dlm"
)

// hub connects grants to the acquires parked on them. A parked acquire
// subscribes to the ID its lease will have; whoever commits the grant
// delivers the lease there.
type hub struct {
	mu   sync.Mutex
	subs map[string][]chan dlm.Lease
}

type subscription struct {
	id string
	ch chan dlm.Lease // buffered: delivery never blocks
}

func (h *hub) subscribe(id string) *subscription {
	s := &subscription{id: id, ch: make(chan dlm.Lease, 1)}
	h.mu.Lock()
	h.subs[id] = append(h.subs[id], s.ch)
	h.mu.Unlock()
	return s
}

func (h *hub) unsubscribe(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	chans := h.subs[s.id]
	for i, c := range chans {
		if c == s.ch {
			chans = append(chans[:i], chans[i+1:]...)
			break
		}
	}
	if len(chans) == 0 {
		delete(h.subs, s.id)
	} else {
		h.subs[s.id] = chans
	}
}

// deliver hands l to whoever waits for it, if anybody does.
func (h *hub) deliver(l dlm.Lease) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.subs[l.ID] {
		select {
		case c <- l:
		default: // already delivered once
		}
	}
}
