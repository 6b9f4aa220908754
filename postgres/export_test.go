package postgres

import "github.com/dlmhq/dlm"

// BeforeLoad makes a Store opened with o call f just before it sends a round
// that loads locks, with the backend PID of the round's connection and the
// locks the round names. f runs while the round's operations wait for it.
func BeforeLoad(o *Options, f func(pid uint32, keys []dlm.Key)) { o.beforeLoad = f }

// QueuedUpdates is how many Updates wait for the committer to start a group.
func QueuedUpdates(s *Store) int { return len(s.reqs) }
