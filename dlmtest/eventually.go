package dlmtest

import (
	"testing"
	"time"
)

// eventuallyTimeout is how long Eventually waits: far beyond what any
// condition takes on a loaded 2-core machine, so that only a real failure
// reaches it.
const eventuallyTimeout = 10 * time.Second

// Eventually polls cond every few milliseconds until it is true, and fails t
// if it is still false after 10 s. It is for state that gives no signal to
// wait on (a gauge, another process, a store's background work); what names
// the condition in the failure: "the waiter is queued".
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventuallyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
