package dlmtest

// NextToken reports whether got is a fencing token that a grant after one
// with token prev may carry: prev+1, or, when another server process with a
// later start made the grant (another instance of a cluster, or a restart),
// that process's floor, a multiple of 2^20 above prev (see dlm.TokenFloor).
func NextToken(prev, got int64) bool {
	return got == prev+1 || got > prev && got%(1<<20) == 0
}
