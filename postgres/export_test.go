package postgres

import "github.com/dlmhq/dlm"

// BeforeLoad makes a Store opened with o call f just before Load sends its
// round trip, with the backend PID of its connection and the keys it loads.
// f runs while the Load waits for it.
func BeforeLoad(o *Options, f func(pid uint32, keys []dlm.Key)) { o.beforeLoad = f }
