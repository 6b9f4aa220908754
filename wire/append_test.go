package wire

import (
	"encoding/json"
	"testing"
	"time"
)

func TestLeaseAppendJSONMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 123456789, time.UTC)
	for _, l := range []Lease{
		{LeaseID: "abc", Name: "orders/42", Scope: "tenant", Mode: "exclusive", HolderID: "worker-7", FencingToken: 1 << 52, TTLMs: 30000, AcquiredAt: at, ExpiresAt: at.Add(30 * time.Second)},
		{Name: "a+b=c@d:e~f", Scope: "global", Mode: "shared", HolderID: `h "quoted" \ <tag> & é` + "\x01", FencingToken: 1, TTLMs: 100, AcquiredAt: at.Truncate(time.Second), ExpiresAt: at, Replayed: true},
		{},
	} {
		want, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON =\n%s\nwant (json.Marshal)\n%s", got, want)
		}
	}
}

func FuzzLeaseAppendJSON(f *testing.F) {
	f.Add("id", "name", "holder", int64(7), int64(100), int64(1e18), true, 0, int64(0), int64(0))
	f.Add("id", "name", "holder", int64(7), int64(100), int64(1e18), false, 3, int64(500), int64(60000))
	f.Fuzz(func(t *testing.T, id, name, holder string, token, ttl, nanos int64, replayed bool, limit int, delay, maxHold int64) {
		at := time.Unix(0, nanos).UTC()
		l := Lease{LeaseID: id, Name: name, Scope: "tenant", Mode: "shared", HolderID: holder, FencingToken: token, TTLMs: ttl, AcquiredAt: at, ExpiresAt: at, Replayed: replayed,
			Limit: limit, LockDelayMs: delay, MaxHoldMs: maxHold}
		want, err := json.Marshal(l)
		if err != nil {
			return // a time json.Marshal refuses (a year past 9999) is never sent
		}
		if got := l.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON =\n%s\nwant (json.Marshal)\n%s", got, want)
		}
	})
}
