package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
)

// isConflict reports whether err says the lock is held.
func isConflict(err error) bool { return errors.Is(err, dlm.ErrLockConflict) }

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress shows a spinner line on w, if it is a terminal, while a lock
// is waited for; conflict is the error that said who holds it. stop clears
// the line.
func startProgress(w io.Writer, name string, conflict error) (stop func()) {
	if !isTerminal(w) {
		return func() {}
	}
	held := ""
	var e *dlm.Error
	if errors.As(conflict, &e) && len(e.Holders) > 0 {
		ids := make([]string, len(e.Holders))
		for i, h := range e.Holders {
			ids[i] = h.HolderID
		}
		held = " held by " + strings.Join(ids, ", ")
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		frames := `⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏`
		start := time.Now()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			f := []rune(frames)[i%10]
			fmt.Fprintf(w, "\r\033[K%c waiting for lock %s%s (%s)", f, name, held, time.Since(start).Round(time.Second))
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
