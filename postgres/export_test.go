package postgres

import (
	"context"

	"github.com/dlmhq/dlm"
)

// BeforeLoad makes a Store opened with o call f just before Load sends its
// round trip, with the backend PID of its connection and the keys it loads.
// f runs while the Load waits for it.
func BeforeLoad(o *Options, f func(pid uint32, keys []dlm.Key)) { o.beforeLoad = f }

// FoldUsage folds the usage rows of backends that are gone, as the janitor
// does every minute.
func (s *Store) FoldUsage(ctx context.Context) error { return s.foldUsage(ctx) }
