// Package soak holds dlm's soak test, which runs only with the soak build
// tag, outside the default test run:
//
//	go test -tags soak -run TestSoak -timeout 30m -v ./soak -soak.duration=10m
//
// It runs a real server in-process (SQLite file, engine, HTTP API on
// loopback) under minutes of load with thousands of leases held and renewed,
// thousands of blocking acquires queued, timing out and cancelled, leases
// left to expire, and event watchers coming and going; then it stops the
// load and checks that goroutines and memory return to their baseline: no
// leaked waiters, timers, watchers or connections. See RELIABILITY.md.
package soak
