package dlmhttp

import (
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
)

// lease are the fields of an acquire body that say what lease is asked
// for, shared by the acquire of one lock and of several.
type lease struct {
	holder                        string
	ttl, wait, lockDelay, maxHold time.Duration
}

// leaseBody decodes the lease fields of o. Where the engine reads a zero
// as "omitted" (ttl_ms, max_hold_ms), a zero given is refused here.
func leaseBody(o object) (lease, error) {
	var l lease
	holder, given, err := o.string("holder_id")
	if err != nil {
		return l, err
	} else if !given {
		return l, dlm.Invalid("holder_id", "is required")
	}
	l.holder = holder

	if ms, given, err := o.int("ttl_ms"); err != nil {
		return l, err
	} else if given {
		if ms == 0 {
			return l, dlm.Invalid("ttl_ms", "must be at least %d (omit it for the default, %d)", dlm.MinTTLMillis, dlm.DefaultTTLMs)
		}
		l.ttl = millis(ms)
	}

	if ms, given, err := o.int("wait_ms"); err != nil {
		return l, err
	} else if given {
		l.wait = millis(ms)
	}

	// 0, no lock-delay, is the default and in range: it is taken as given.
	if ms, given, err := o.int("lock_delay_ms"); err != nil {
		return l, err
	} else if given {
		l.lockDelay = millis(ms)
	}

	if ms, given, err := o.int("max_hold_ms"); err != nil {
		return l, err
	} else if given {
		if ms == 0 {
			return l, dlm.Invalid("max_hold_ms", "must be at least %d (omit it for no cap)", dlm.MinTTLMillis)
		}
		l.maxHold = millis(ms)
	}
	return l, nil
}

// lockSpec decodes the fields of o that say which lock, and how, for
// tenant: mode, scope and limit, on the lock name (validated by the caller).
func lockSpec(o object, tenant, name string) (engine.LockSpec, error) {
	l := engine.LockSpec{Key: dlm.Key{Namespace: tenant, Name: name}}
	if m, given, err := o.string("mode"); err != nil {
		return l, err
	} else if given {
		mode, ok := dlm.ParseMode(m)
		if !ok || m == "" {
			return l, dlm.Invalid("mode", "must be %q or %q", "exclusive", "shared")
		}
		l.Mode = mode
	}

	if s, given, err := o.string("scope"); err != nil {
		return l, err
	} else if global, err := parseScope(s, given); err != nil {
		return l, err
	} else if global {
		l.Key.Namespace = dlm.GlobalNamespace
	}

	if n, given, err := o.int("limit"); err != nil {
		return l, err
	} else if given {
		// The engine reads a zero limit as "none": refuse it here.
		if n < 1 || n > engine.MaxLimit {
			err := dlm.Invalid("limit", "must be between 1 and %d (omit it for no limit)", engine.MaxLimit)
			err.Max = engine.MaxLimit
			return l, err
		}
		l.Limit = int(n)
	}
	return l, nil
}
