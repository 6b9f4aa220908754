//go:build !race

package dlmtest

const raceEnabled = false
