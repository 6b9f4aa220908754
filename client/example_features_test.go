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

// A semaphore lets up to three workers at a time call a rate-limited
// API. Each permit is an ordinary Lock: kept alive, lost and released like
// one.
func ExampleSemaphore() {
	c, err := client.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	permit, err := c.Semaphore("partner-api", 3).Acquire(ctx, &client.AcquireOptions{Wait: time.Minute})
	if errors.Is(err, dlm.ErrWaitTimeout) {
		log.Fatal("all three permits stayed taken for a minute")
	}
	if err != nil {
		log.Fatal(err)
	}
	defer permit.Release(context.WithoutCancel(ctx))
	fmt.Println("calling with permit token", permit.Token())
}

// AcquireMany takes both accounts of a transfer in one step or neither,
// so two transfers in opposite directions never deadlock.
func ExampleClient_AcquireMany() {
	c, err := client.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	locks, err := c.AcquireMany(ctx, []client.LockSpec{{Name: "accounts/17"}, {Name: "accounts/42"}},
		&client.AcquireOptions{Wait: 10 * time.Second, MaxHold: time.Minute})
	var e *dlm.Error
	if errors.As(err, &e) && e.Code == dlm.CodeWaitTimeout {
		log.Fatalf("%s stayed busy", e.Lock)
	}
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range locks {
		defer l.Release(context.WithoutCancel(ctx))
	}
	fmt.Println("debit with token", locks[0].Token(), "credit with token", locks[1].Token())
}
