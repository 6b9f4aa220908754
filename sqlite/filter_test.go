package sqlite

import (
	"fmt"
	"testing"

	"github.com/dlmhq/dlm"
)

// TestKeyFilter checks that the filter never forgets a key as it grows past
// several filters, and that it rejects most keys it was not given (else it
// would save no queries).
func TestKeyFilter(t *testing.T) {
	f := newKeyFilter()
	const n = 3 * filterFirst
	key := func(i int) dlm.Key { return dlm.Key{Namespace: "t", Name: fmt.Sprint("k", i)} }
	for i := range n {
		f.add(key(i))
	}
	if len(f.filters) < 2 {
		t.Fatalf("%d keys fill %d filter(s), want the chain to grow", n, len(f.filters))
	}
	for i := range n {
		if !f.mayHave(key(i)) {
			t.Fatalf("key %d was added but is not found", i)
		}
	}
	falsePositives := 0
	for i := n; i < 2*n; i++ {
		if f.mayHave(key(i)) {
			falsePositives++
		}
	}
	if rate := float64(falsePositives) / n; rate > 0.05 {
		t.Errorf("%.1f%% false positives, want a few", 100*rate)
	}
	// Adding a key again does not fill the filter.
	before := f.filters[len(f.filters)-1].n
	f.add(key(0))
	if after := f.filters[len(f.filters)-1].n; after != before {
		t.Errorf("adding a known key again counted it: %d keys, then %d", before, after)
	}
}
