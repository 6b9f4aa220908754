package sqlite

import (
	"database/sql"
	"encoding/json"

	"github.com/dlmhq/dlm"
)

// A multi-lock waiter's locks (dlm.Waiter.GroupKeys) are one column: a
// JSON array of [namespace, name] pairs, NULL for a waiter of one lock. Few
// waiters have any, and only whole lists are ever read or written.

func groupKeysColumn(keys []dlm.Key) any {
	if len(keys) == 0 {
		return nil
	}
	pairs := make([][2]string, len(keys))
	for i, k := range keys {
		pairs[i] = [2]string{k.Namespace, k.Name}
	}
	b, err := json.Marshal(pairs)
	if err != nil {
		panic(err) // strings always marshal
	}
	return string(b)
}

func parseGroupKeys(col sql.NullString) ([]dlm.Key, error) {
	if !col.Valid {
		return nil, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal([]byte(col.String), &pairs); err != nil {
		return nil, err
	}
	keys := make([]dlm.Key, len(pairs))
	for i, p := range pairs {
		keys[i] = dlm.Key{Namespace: p[0], Name: p[1]}
	}
	return keys, nil
}
