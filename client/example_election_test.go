package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/dlmhq/dlm/client"
)

// An Election elects one leader among the processes that campaign on a
// name; TestElection runs the same calls against a real server. The leader
// does its work until it resigns or Lost fires: when its process dies or
// its connection breaks, the server releases the lock at once
// (release_on_close) and the next candidate is elected.
func ExampleElection() {
	c, err := client.FromEnv(nil)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	e := c.NewElection("scheduler/leader", client.ScopeTenant)

	// Observers learn of every new leader.
	go func() {
		for leader, err := range e.Observe(ctx) {
			if err != nil {
				return
			}
			fmt.Println("leader is now", leader)
		}
	}()

	if err := e.Campaign(ctx, "scheduler-1"); err != nil { // blocks until elected
		log.Fatal(err)
	}
	defer e.Resign(context.WithoutCancel(ctx))
	for {
		select {
		case <-e.Lost():
			log.Print("lost leadership: stop scheduling")
			return
		default:
			schedule(ctx, e.Token()) // the token fences writes of a deposed leader
		}
	}
}

func schedule(ctx context.Context, token int64) {}
