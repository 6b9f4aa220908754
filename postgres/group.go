package postgres

import (
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/internal/groupkeys"
)

// groupKeysColumn is the waiters.group_keys value of keys (a jsonb column
// that the statements pass and read as text): nil for a waiter of one lock.
func groupKeysColumn(keys []dlm.Key) *string {
	if s, ok := groupkeys.Encode(keys); ok {
		return &s
	}
	return nil
}

func parseGroupKeys(col *string) ([]dlm.Key, error) {
	if col == nil {
		return nil, nil
	}
	return groupkeys.Decode(*col)
}
