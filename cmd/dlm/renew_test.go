package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/wire"
)

func TestRenew(t *testing.T) {
	s := testserver.New(t, nil)
	lease := mustAcquire(t, s, "--ttl", "10s", "cli/a")
	r := runMain(t, tenantEnv(s), "renew", "--json", "--ttl", "1m", lease.LeaseID)
	var renewed wire.Lease
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &renewed) != nil {
		t.Fatalf("renew: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if renewed.FencingToken != lease.FencingToken || renewed.TTLMs != 60000 || !renewed.ExpiresAt.After(lease.ExpiresAt.Add(40*time.Second)) {
		t.Errorf("renewed %+v from %+v", renewed, lease)
	}
	if r := runMain(t, tenantEnv(s), "renew", "no-such-lease"); r.code != exitError || !strings.Contains(r.stderr, "not_found") {
		t.Errorf("renew of an unknown lease: exit %d: %s", r.code, r.stderr)
	}
}
