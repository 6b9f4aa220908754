package postgres

import (
	"encoding/json"

	"github.com/dlmhq/dlm"
)

// A multi-lock waiter's locks (dlm.Waiter.GroupKeys) are one jsonb column:
// an array of [namespace, name] pairs, NULL for a waiter of one lock. Few
// waiters have any, and only whole lists are ever read or written. The
// statements pass and read it as text.

func groupKeysColumn(keys []dlm.Key) *string {
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
	s := string(b)
	return &s
}

func parseGroupKeys(col *string) ([]dlm.Key, error) {
	if col == nil {
		return nil, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal([]byte(*col), &pairs); err != nil {
		return nil, err
	}
	keys := make([]dlm.Key, len(pairs))
	for i, p := range pairs {
		keys[i] = dlm.Key{Namespace: p[0], Name: p[1]}
	}
	return keys, nil
}
