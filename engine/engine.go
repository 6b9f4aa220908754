// Package engine runs lock operations on a dlm.Store: it validates requests,
// drives dlm.LockState inside store transactions, parks blocking acquires
// until they are granted, and sweeps expired leases on time.
//
// It is the one implementation of the lock service; the HTTP layer and tests
// call it, and every storage backend gets the same semantics through it.
package engine
