package engine

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
)

// ErrKeyRevoked is the cause of a KeyContext's end: the key was revoked.
var ErrKeyRevoked = dlm.Errorf(dlm.CodeUnauthenticated, "API key revoked")

// keyHolds is what each API key holds open here: the contexts of its
// watches and queued acquires, ended when the key is revoked.
type keyHolds struct {
	mu      sync.Mutex
	byKey   map[string]map[*keyHold]struct{}
	revoked map[string]bool // keys revoked through this engine
}

type keyHold struct{ cancel context.CancelCauseFunc }

// KeyContext returns a context derived from ctx that ends, with the cause
// ErrKeyRevoked, when the API key keyID is revoked: at once if through this
// engine, else (another process on a shared store) within KeyCacheTTL. Run
// whatever a request keeps open under it (a watch, a queued acquire), so
// that revocation ends it; call the CancelFunc when it is over.
func (e *Engine) KeyContext(ctx context.Context, keyID string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	h := &keyHold{cancel: cancel}
	k := &e.holds
	k.mu.Lock()
	if k.revoked[keyID] {
		// Revoked between the request's authentication and now.
		k.mu.Unlock()
		cancel(ErrKeyRevoked)
		return ctx, func() {}
	}
	if k.byKey == nil {
		k.byKey = map[string]map[*keyHold]struct{}{}
	}
	if k.byKey[keyID] == nil {
		k.byKey[keyID] = map[*keyHold]struct{}{}
	}
	k.byKey[keyID][h] = struct{}{}
	k.mu.Unlock()
	return ctx, func() {
		k.mu.Lock()
		if hs := k.byKey[keyID]; hs != nil {
			delete(hs, h)
			if len(hs) == 0 {
				delete(k.byKey, keyID)
			}
		}
		k.mu.Unlock()
		cancel(context.Canceled)
	}
}

// revoke ends what keyID holds open. local is true for a revocation through
// this engine, which is remembered so that a request that authenticated
// just before it cannot open anything afterwards.
func (k *keyHolds) revoke(keyID string, local bool) {
	k.mu.Lock()
	hs := k.byKey[keyID]
	delete(k.byKey, keyID)
	if local {
		if k.revoked == nil {
			k.revoked = map[string]bool{}
		}
		k.revoked[keyID] = true
	}
	k.mu.Unlock()
	for h := range hs {
		h.cancel(ErrKeyRevoked)
	}
}

func (k *keyHolds) ids() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	ids := make([]string, 0, len(k.byKey))
	for id := range k.byKey {
		ids = append(ids, id)
	}
	return ids
}

// refreshKeys, on a store shared with other processes, looks up every key
// that is cached or holds something open here once per KeyCacheTTL, and
// forgets and ends what belongs to a key revoked elsewhere.
func (e *Engine) refreshKeys(ctx context.Context) {
	defer e.wg.Done()
	t := time.NewTicker(KeyCacheTTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ids := e.holds.ids()
		for _, id := range e.keys.ids() {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		var gone []string
		err := e.store.View(ctx, func(tx dlm.ReadTx) error {
			gone = gone[:0]
			for _, id := range ids {
				k, found, err := tx.APIKey(ctx, id)
				if err != nil {
					return err
				}
				if !found || k.Revoked {
					gone = append(gone, id)
				}
			}
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				if held, ok := e.logs.Allow("refresh keys", time.Now()); ok {
					e.log.Warn("looking up cached API keys failed", "err", err, "held_back", held)
				}
			}
			continue
		}
		for _, id := range gone {
			e.keys.forget(id)
			e.holds.revoke(id, false)
		}
	}
}
