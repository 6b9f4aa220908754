package sqlite

import (
	"hash/maphash"

	"github.com/dlmhq/dlm"
)

// keyFilter tells the committer which locks may have a row in the file, so
// that taking a lock never used before (the common case for many workloads,
// which name a lock per job or per row) costs no query for its last fencing
// token. It is a scalable Bloom filter over every (namespace, name) that
// was ever given a token: a chain of filters, each twice the size of the
// one before, so that it grows without rereading the file. A false positive
// costs one query; there are no false negatives.
type keyFilter struct {
	seed    maphash.Seed
	filters []bloom
}

type bloom struct {
	bits []uint64
	n    int // keys added
	max  int // keys it takes before the next filter starts
}

const (
	filterFirst   = 1 << 16 // keys of the first filter
	filterBitsPer = 10      // bits per key: about 1% false positives per filter
	filterHashes  = 7
)

func newKeyFilter() *keyFilter { return &keyFilter{seed: maphash.MakeSeed()} }

func (f *keyFilter) hash(k dlm.Key) (h1, h2 uint64) {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(k.Namespace)
	h.WriteByte(0) // namespaces hold no NUL
	h.WriteString(k.Name)
	sum := h.Sum64()
	return sum, sum>>32 | 1
}

// add records that k has a row in the file, or will once the batch that
// gave it a token is applied. A key that may be there already is not added
// again, so that only new keys fill the filters.
func (f *keyFilter) add(k dlm.Key) {
	if f.mayHave(k) {
		return
	}
	if len(f.filters) == 0 || f.filters[len(f.filters)-1].n >= f.filters[len(f.filters)-1].max {
		size := filterFirst << len(f.filters)
		f.filters = append(f.filters, bloom{bits: make([]uint64, size*filterBitsPer/64), max: size})
	}
	b := &f.filters[len(f.filters)-1]
	h1, h2 := f.hash(k)
	m := uint64(len(b.bits) * 64)
	for i := range uint64(filterHashes) {
		bit := (h1 + i*h2) % m
		b.bits[bit/64] |= 1 << (bit % 64)
	}
	b.n++
}

// mayHave reports whether k may have been added.
func (f *keyFilter) mayHave(k dlm.Key) bool {
	h1, h2 := f.hash(k)
next:
	for _, b := range f.filters {
		m := uint64(len(b.bits) * 64)
		for i := range uint64(filterHashes) {
			bit := (h1 + i*h2) % m
			if b.bits[bit/64]&(1<<(bit%64)) == 0 {
				continue next
			}
		}
		return true
	}
	return false
}
