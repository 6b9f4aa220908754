package engine

import (
	"slices"
	"sync"
	"time"
)

// keyCache remembers API keys that authenticated, by the SHA-256 of the key,
// so that a request costs no read of the store. A key revoked through this
// engine is forgotten at once. On a store shared with other processes, which
// may revoke keys too, an entry is trusted for KeyCacheTTL only, and the
// engine looks up every key it caches or holds something open for once per
// KeyCacheTTL (see Engine.refreshKeys).
type keyCache struct {
	mu sync.RWMutex
	m  map[[32]byte]cachedKey
}

type cachedKey struct {
	id     string
	p      Principal
	expiry time.Time
}

const (
	// maxCachedKeys bounds the cache; past it, the cache starts over.
	maxCachedKeys = 10_000
)

// KeyCacheTTL bounds how long a key revoked by another process sharing the
// store (another instance on the same PostgreSQL database) still works
// here: new requests are refused, and its watches and queued acquires
// ended, at most this long after the revocation. A revocation through this
// engine takes effect at once.
const KeyCacheTTL = time.Second

func (c *keyCache) get(hash []byte, shared bool) (Principal, bool) {
	c.mu.RLock()
	k, ok := c.m[[32]byte(hash)]
	c.mu.RUnlock()
	if !ok || (shared && time.Now().After(k.expiry)) {
		return Principal{}, false
	}
	return k.p, true
}

func (c *keyCache) put(hash []byte, id string, p Principal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedKeys {
		c.m = map[[32]byte]cachedKey{}
	}
	c.m[[32]byte(hash)] = cachedKey{id: id, p: p, expiry: time.Now().Add(KeyCacheTTL)}
}

// forget drops the key with ID id.
func (c *keyCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, k := range c.m {
		if k.id == id {
			delete(c.m, h)
		}
	}
}

// ids returns the IDs of the cached keys that get still answers.
func (c *keyCache) ids() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var ids []string
	now := time.Now()
	for _, k := range c.m {
		if now.Before(k.expiry) && !slices.Contains(ids, k.id) {
			ids = append(ids, k.id)
		}
	}
	return ids
}
