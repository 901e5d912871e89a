//go:build race

package gateway

// raceEnabled: the race detector inflates allocations and heap sizes.
const raceEnabled = true
