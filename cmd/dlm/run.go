package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/dlmhq/dlm/client"
)

// releaseTimeout bounds the release after the command has finished.
const releaseTimeout = 10 * time.Second

func (m *Main) runRun(ctx context.Context, g *globals, args []string) error {
	var lf lockFlags
	fs := m.newFlagSet(g, "run", "NAME [flags] -- COMMAND [ARGS...]",
		`Run holds the lock NAME while COMMAND runs, and releases it when the command
exits. The lease is renewed in the background. The command gets
DLM_FENCING_TOKEN, DLM_LEASE_ID and DLM_LOCK_NAME in its environment: pass the
fencing token to whatever the lock protects, since the lock alone cannot stop
a stale holder's writes.

The lock is held over a session with the server, which tells run the moment
the lease ends (a force-release, an expiry): the command is stopped then, not
at the next renewal. With --release-on-exit the server also releases the lock
when run itself dies (killed, or its machine gone), as soon as its connection
ends, instead of at the lease's expiry; a broken connection then counts as a
lost lock.

With --limit N the command holds one of N permits of NAME instead (a
semaphore): up to N commands run with it at once.

The command runs in its own process group. If the lock is lost, the group
gets SIGTERM, then SIGKILL after --grace, and run exits 70. The first SIGINT
or SIGTERM sent to dlm is passed on to the command; a second one kills it.

Exit status: the command's own (128+n if signal n killed it), 75 if the lock
could not be had, 70 if it was lost, 126/127 if the command could not be
executed or found, 64 for usage errors.
`)
	lf.register(fs)
	grace := fs.Duration("grace", 10*time.Second, "after SIGTERM on loss, wait this long before SIGKILL")
	fs.BoolVar(&lf.releaseOnClose, "release-on-exit", false, "have the server release the lock as soon as this process's connection ends, even if it is killed")
	i := slices.Index(args, "--")
	if i < 0 && !slices.ContainsFunc(args, isHelpFlag) {
		return usagef("run: missing -- before the command")
	}
	var command []string
	if i >= 0 {
		args, command = args[:i], args[i+1:]
	}
	name, err := parseLockName(fs, args)
	if err != nil {
		return err
	}
	if len(command) == 0 {
		return usagef("run: no command after --")
	}
	c, err := g.client(false)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	l, err := m.acquireForRun(ctx, c, &lf, name, sigs)
	if err != nil {
		return err
	}
	r := &runner{m: m, lock: l, grace: *grace, sigs: sigs}
	return r.run(ctx, command)
}

func isHelpFlag(s string) bool { return s == "-h" || s == "-help" || s == "--help" || s == "-h=true" }

// acquireForRun takes the lock; a signal while waiting gives up.
func (m *Main) acquireForRun(ctx context.Context, c *client.Client, lf *lockFlags, name string, sigs <-chan os.Signal) (*client.Lock, error) {
	type result struct {
		l   *client.Lock
		err error
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		l, err := lf.acquire(actx, c, name, lf.options(), m.Stderr)
		done <- result{l, err}
	}()
	select {
	case r := <-done:
		return r.l, r.err
	case s := <-sigs:
		cancel()
		if r := <-done; r.l != nil {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer rcancel()
			_ = r.l.Release(rctx)
		}
		return nil, &exitCodeError{code: exitSignalled + signum(s), err: fmt.Errorf("%v while waiting for lock %q", s, name)}
	}
}

// runner runs one command under a lock.
type runner struct {
	m     *Main
	lock  *client.Lock
	grace time.Duration
	sigs  <-chan os.Signal
	cmd   *exec.Cmd
}

func (r *runner) run(ctx context.Context, command []string) error {
	l := r.lock
	r.cmd = exec.Command(command[0], command[1:]...)
	r.cmd.Env = append(os.Environ(),
		"DLM_FENCING_TOKEN="+strconv.FormatInt(l.Token(), 10),
		"DLM_LEASE_ID="+l.LeaseID(),
		"DLM_LOCK_NAME="+l.Name(),
	)
	r.cmd.Stdin, r.cmd.Stdout, r.cmd.Stderr = r.m.Stdin, r.m.Stdout, r.m.Stderr
	// Its own process group, so that stopping it reaches its children.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		r.release(ctx)
		code := exitNoExec
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return &exitCodeError{code: code, err: fmt.Errorf("run: %w", err)}
	}
	exited := make(chan error, 1)
	go func() { exited <- r.cmd.Wait() }()

	lost := l.Lost()
	var kill <-chan time.Time
	var forwarded, abort os.Signal
	done := ctx.Done()
	for {
		select {
		case err := <-exited:
			return r.finish(ctx, err, abort)
		case <-lost:
			lost = nil
			fmt.Fprintf(r.m.Stderr, "dlm: %s; stopping the command\n", errText(l.Err()))
			r.signal(syscall.SIGTERM)
			timer := time.NewTimer(r.grace)
			defer timer.Stop()
			kill = timer.C
		case <-kill:
			kill = nil
			fmt.Fprintf(r.m.Stderr, "dlm: command still running %v after SIGTERM; killing it\n", r.grace)
			r.signal(syscall.SIGKILL)
		case s := <-r.sigs:
			if forwarded == nil && kill == nil {
				forwarded = s
				r.signal(s)
				continue
			}
			abort = s
			r.signal(syscall.SIGKILL)
		case <-done:
			done = nil
			r.signal(syscall.SIGKILL)
		}
	}
}

// signal sends s to the command's process group.
func (r *runner) signal(s os.Signal) {
	_ = syscall.Kill(-r.cmd.Process.Pid, s.(syscall.Signal))
}

// finish releases the lock after the command exited with err and returns
// run's result: loss first, then an abort, then the command's own status.
func (r *runner) finish(ctx context.Context, err error, abort os.Signal) error {
	lostErr := r.lock.Err()
	if lostErr == nil {
		r.release(ctx)
		lostErr = r.lock.Err() // the release may find it had ended
	}
	switch {
	case lostErr != nil:
		return lostErr
	case abort != nil:
		return &exitCodeError{code: exitSignalled + signum(abort), err: fmt.Errorf("run: aborted by a second %v; killed the command", abort)}
	case ctx.Err() != nil:
		return ctx.Err()
	}
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		code = ws.ExitStatus()
		if ws.Signaled() {
			code = exitSignalled + int(ws.Signal())
		}
	default:
		return fmt.Errorf("run: %w", err)
	}
	if code == 0 {
		return nil
	}
	return &exitCodeError{code: code, quiet: true, err: fmt.Errorf("command exited with status %d", code)}
}

func (r *runner) release(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := r.lock.Release(rctx); err != nil && r.lock.Err() == nil {
		fmt.Fprintf(r.m.Stderr, "dlm: %v (the lease ends by itself at its expiry)\n", err)
	}
}

func signum(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 0
}
