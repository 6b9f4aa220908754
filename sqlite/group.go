package sqlite

import (
	"database/sql"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/internal/groupkeys"
)

// groupKeysColumn is the waiters.group_keys value of keys: NULL for a
// waiter of one lock.
func groupKeysColumn(keys []dlm.Key) any {
	if s, ok := groupkeys.Encode(keys); ok {
		return s
	}
	return nil
}

func parseGroupKeys(col sql.NullString) ([]dlm.Key, error) {
	if !col.Valid {
		return nil, nil
	}
	return groupkeys.Decode(col.String)
}
