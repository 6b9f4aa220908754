// Package groupkeys encodes the locks of a multi-lock waiter
// (dlm.Waiter.GroupKeys) for a store's one column: a JSON array of
// [namespace, name] pairs. Few waiters have any, and only whole lists are
// ever read or written, so both stores keep them this way.
package groupkeys

import (
	"encoding/json"

	"github.com/dlmhq/dlm"
)

// Encode returns the column's text for keys, and false for a waiter of one
// lock, which stores NULL.
func Encode(keys []dlm.Key) (string, bool) {
	if len(keys) == 0 {
		return "", false
	}
	pairs := make([][2]string, len(keys))
	for i, k := range keys {
		pairs[i] = [2]string{k.Namespace, k.Name}
	}
	b, err := json.Marshal(pairs)
	if err != nil {
		panic(err) // strings always marshal
	}
	return string(b), true
}

// Decode reads a column that Encode wrote.
func Decode(col string) ([]dlm.Key, error) {
	var pairs [][2]string
	if err := json.Unmarshal([]byte(col), &pairs); err != nil {
		return nil, err
	}
	keys := make([]dlm.Key, len(pairs))
	for i, p := range pairs {
		keys[i] = dlm.Key{Namespace: p[0], Name: p[1]}
	}
	return keys, nil
}
