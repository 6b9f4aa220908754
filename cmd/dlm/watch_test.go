package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/wire"
)

func TestWatchPrintsEventsAsTheyHappen(t *testing.T) {
	s := testserver.New(t, nil)
	c := apiClient(t, s, s.TenantKey)
	ctx := context.Background()
	for _, asJSON := range []bool{false, true} {
		args := []string{"watch", "--name", "w"}
		if asJSON {
			args = append(args, "--json")
		}
		p := startDLM(t, s, args...)
		// A watch shows new events only: make events until one shows,
		// and the watch is known to be live.
		for deadline := time.Now().Add(30 * time.Second); ; {
			l, err := c.TryAcquire(ctx, "w", &client.AcquireOptions{HolderID: "warm-up"})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if _, ok := p.stdout.find("warm-up", 200*time.Millisecond); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dlm watch printed nothing; stderr:\n%s", p.stderrString())
			}
		}
		l, err := c.TryAcquire(ctx, "w", &client.AcquireOptions{HolderID: "live"})
		if err != nil {
			t.Fatal(err)
		}
		line := p.stdout.waitLine(t, "live", 10*time.Second)
		if asJSON {
			var e wire.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil || e.Type != "acquired" || e.Name != "w" || e.FencingToken != l.Token() || e.ID == 0 {
				t.Errorf("--json line %q: %v", line, err)
			}
		} else if !strings.Contains(line, "acquired") || !strings.Contains(line, "w  by live (exclusive) token "+strconv.FormatInt(l.Token(), 10)) {
			t.Errorf("line %q", line)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Kill()
	}
}

// TestWatchFromStart: --from-start replays the events made before the watch.
func TestWatchFromStart(t *testing.T) {
	s := testserver.New(t, nil)
	c := apiClient(t, s, s.TenantKey)
	if _, err := c.TryAcquire(context.Background(), "w", &client.AcquireOptions{HolderID: "early", NoKeepAlive: true}); err != nil {
		t.Fatal(err)
	}
	p := startDLM(t, s, "watch", "--from-start")
	if line := p.stdout.waitLine(t, "early", 30*time.Second); !strings.Contains(line, "#1 ") {
		t.Errorf("first line %q, want event 1", line)
	}
}
