//go:build race

package dlmtest

// raceEnabled makes Binary build dlm with the race detector when the tests
// run with it, so that the server processes are checked too.
const raceEnabled = true
