package dlm

import (
	"fmt"
	"time"
)

// EventType names what happened to a lock.
type EventType uint8

// Event types (the events API).
const (
	EventAcquired      EventType = 1
	EventRenewed       EventType = 2
	EventReleased      EventType = 3
	EventExpired       EventType = 4
	EventForceReleased EventType = 5
	// EventWaiting: a request queued behind the holders, a hint to finish up.
	EventWaiting EventType = 6
)

var eventTypeNames = [...]string{
	EventAcquired:      "acquired",
	EventRenewed:       "renewed",
	EventReleased:      "released",
	EventExpired:       "expired",
	EventForceReleased: "force_released",
	EventWaiting:       "waiting",
}

// String returns the wire name of t.
func (t EventType) String() string {
	if int(t) < len(eventTypeNames) && eventTypeNames[t] != "" {
		return eventTypeNames[t]
	}
	return fmt.Sprintf("EventType(%d)", t)
}

// ParseEventType parses a wire name.
func ParseEventType(s string) (EventType, bool) {
	for t, name := range eventTypeNames {
		if name != "" && name == s {
			return EventType(t), true
		}
	}
	return 0, false
}

// Event is one entry of the append-only event log. It identifies the grant by
// its fencing token and never carries a lease ID.
type Event struct {
	ID       int64 // assigned by the store; strictly increasing
	Type     EventType
	Key      Key
	HolderID string
	Mode     Mode
	Token    int64 // 0 for waiting
	At       time.Time
}

// EventFilter selects events for history and watch.
type EventFilter struct {
	// Namespaces the caller may see: its tenant and the global namespace.
	// Nil means every namespace (the engine's own feed).
	Namespaces []string
	Name       string // exact name, or ""
	Prefix     string // name prefix, or ""
	Since      int64  // exclusive
	Limit      int
}

// Match reports whether e passes f, ignoring Since and Limit.
func (f *EventFilter) Match(e *Event) bool {
	if f.Name != "" && e.Key.Name != f.Name {
		return false
	}
	if f.Prefix != "" && (len(e.Key.Name) < len(f.Prefix) || e.Key.Name[:len(f.Prefix)] != f.Prefix) {
		return false
	}
	if f.Namespaces == nil {
		return true
	}
	for _, ns := range f.Namespaces {
		if ns == e.Key.Namespace {
			return true
		}
	}
	return false
}
