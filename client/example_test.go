package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
)

// These examples need a running server (DLM_URL, DLM_KEY), so they are
// compiled but not run by go test. The package's tests run the same calls
// against a real in-process server.

// WithLock runs a job while holding a lock, and stops the job if the lock is
// lost. The fencing token goes with every write the lock protects.
func Example() {
	c, err := client.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	err = c.WithLock(ctx, "reports/nightly", &client.AcquireOptions{TTL: 10 * time.Second},
		func(ctx context.Context, l *client.Lock) error {
			// ctx ends if the lease is lost: stop writing then.
			return writeReport(ctx, l.Token())
		})
	if errors.Is(err, client.ErrLockLost) {
		log.Printf("lost the lock while writing; the store rejected stale writes by token: %v", err)
	}
}

func writeReport(ctx context.Context, token int64) error { return ctx.Err() }

// Acquire waits for a lock for up to a minute and keeps it alive until
// Release.
func ExampleClient_Acquire() {
	c, err := client.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	l, err := c.Acquire(ctx, "orders/42", &client.AcquireOptions{Wait: time.Minute})
	if errors.Is(err, dlm.ErrWaitTimeout) {
		log.Fatal("orders/42 stayed busy for a minute")
	}
	if err != nil {
		log.Fatal(err)
	}
	defer l.Release(context.WithoutCancel(ctx))
	select {
	case <-l.Lost():
		log.Printf("lost: %v", l.Err())
	case <-time.After(time.Second): // the work
		fmt.Println("done with token", l.Token())
	}
}

// TryAcquire does not wait; a conflict says who holds the lock.
func ExampleClient_TryAcquire() {
	c, err := client.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	l, err := c.TryAcquire(context.Background(), "deploy/prod", nil)
	var e *dlm.Error
	if errors.As(err, &e) && e.Code == dlm.CodeLockConflict {
		for _, h := range e.Holders {
			fmt.Printf("held by %s until %s\n", h.HolderID, h.ExpiresAt)
		}
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer l.Release(context.Background())
}

// Watch prints every event on locks under "orders/" until ctx ends,
// resuming by itself after a dropped connection.
func ExampleClient_Watch() {
	c, err := client.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for e, err := range c.Watch(ctx, &client.WatchOptions{Prefix: "orders/"}) {
		if errors.Is(err, client.ErrCompacted) {
			log.Fatal("fell too far behind; re-read state with Inspect")
		}
		if err != nil {
			break // ctx ended, or the server refused
		}
		fmt.Println(e.ID, e.Type, e.Key.Name, e.HolderID, e.Token)
	}
}
