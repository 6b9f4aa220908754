// Command dlm is the dlm lock service: `dlm serve` runs the server, and the
// other commands are a client of it for shells and scripts.
//
// Exit codes:
//
//	0    success (for run: the command's own status otherwise)
//	1    any other error (server unreachable, request refused, ...)
//	64   usage error
//	70   the lock was lost (run: while the command ran)
//	75   the lock could not be had: held (conflict) or the wait timed out
//	126  run: the command could not be executed
//	127  run: the command was not found
//	128+n  run: the command died of signal n, or dlm was aborted by it
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
)

// Exit codes, from BSD sysexits where one fits.
const (
	exitError     = 1
	exitUsage     = 64 // EX_USAGE
	exitLockLost  = 70 // EX_SOFTWARE: the protection the command relied on ended
	exitNoLock    = 75 // EX_TEMPFAIL: try again later
	exitNoExec    = 126
	exitNotFound  = 127
	exitSignalled = 128 // plus the signal number
)

// Main is the dlm program with its environment, so that end-to-end tests can
// run it in-process.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string

	jsonErrors bool // --json was given: report errors in the API's JSON shape
}

func main() {
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	err := m.Run(context.Background(), os.Args[1:])
	os.Exit(m.exit(err))
}

// exitCodeError carries the exit code of an error that should not be reported
// the generic way: a usage error already explained, or a command's own exit
// status (quiet) that dlm passes on.
type exitCodeError struct {
	code  int
	quiet bool // already reported, or not dlm's to report
	err   error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// errUsage is a usage error whose explanation was printed already.
var errUsage = &exitCodeError{code: exitUsage, quiet: true, err: errors.New("usage")}

// usagef returns a usage error to be printed.
func usagef(format string, args ...any) error {
	return &exitCodeError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exit reports err on Stderr (as text, or with --json as the API's error
// object) and returns the process exit code for it.
func (m *Main) exit(err error) int {
	if err == nil {
		return 0
	}
	code := exitError
	var ce *exitCodeError
	switch {
	case errors.As(err, &ce):
		code = ce.code
		if ce.quiet {
			return code
		}
	case errors.Is(err, client.ErrLockLost):
		code = exitLockLost
	case errors.Is(err, dlm.ErrLockConflict), errors.Is(err, dlm.ErrWaitTimeout):
		code = exitNoLock
	}
	if m.jsonErrors {
		printJSON(m.Stderr, errorOut(err, code))
		return code
	}
	fmt.Fprintf(m.Stderr, "dlm: %s%s\n", errText(err), heldBy(err))
	if code == exitUsage {
		fmt.Fprintln(m.Stderr, "Run 'dlm --help' for usage.")
	}
	return code
}

// errText is err's message for a line that starts "dlm: ", without the
// client's own "dlm: " prefix (client.ErrLockLost's), which would double it.
func errText(err error) string { return strings.TrimPrefix(err.Error(), "dlm: ") }

// heldBy names the holders of a lock that an error says is held, for people:
// "; held by worker-7 (exclusive, token 3, expires in 29s)".
func heldBy(err error) string {
	var e *dlm.Error
	if !errors.As(err, &e) || len(e.Holders) == 0 {
		return ""
	}
	hs := make([]string, len(e.Holders))
	for i, h := range e.Holders {
		hs[i] = fmt.Sprintf("%s (%s, token %d, expires %s)", h.HolderID, h.Mode, h.Token, until(h.ExpiresAt))
	}
	return "; held by " + strings.Join(hs, ", ")
}

const usage = `dlm is a distributed lock manager.

Usage: dlm [global flags] COMMAND [flags] [args]

Server:
  serve                      run the lock server
  version                    print the version (also: dlm --version)
  bench WORKLOAD             load-test a server: uncontended, contended, hold, mixed

Locks:
  run NAME -- CMD [ARGS...]  hold a lock while a command runs
  acquire NAME               take a lock and print its lease
  renew LEASE_ID             extend a lease
  release LEASE_ID           release a lease
  status NAME                show a lock's holders and waiters
  ls                         list locks that are held or waited for
  watch                      print lock events as they happen

Admin (admin key):
  force-release NAME         end every lease on a lock
  tenants create NAME | list | keys create TENANT | keys revoke TENANT KEY_ID

Every command takes --help. Global flags, accepted before or after the
command:
  --url URL        server address, http:// or https:// (env DLM_URL, default
                   http://127.0.0.1:7070)
  --ca-cert FILE   PEM certificates to trust for https besides the system's
                   (env DLM_CA_CERT)
  --key KEY        API key (env DLM_KEY; default: read from the data
                   directory's credentials.json, as written by dlm serve)
  --data-dir DIR   where to find credentials.json (env DLM_DATA_DIR,
                   default ./dlm-data)
  --json           print JSON (one object per line) instead of text

With --json, an error is printed on stderr as the API's error object,
{"error":{"code","message","details"}}, and stdout keeps only results.

Exit codes: 0 success (run: the command's status), 1 error, 64 usage,
70 lock lost, 75 lock not obtained, 126/127 command not executable/found,
128+n signal n.
`

// Run runs the dlm command line with args (without the program name).
func (m *Main) Run(ctx context.Context, args []string) error {
	g := &globals{}
	fs := flag.NewFlagSet("dlm", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() { fmt.Fprint(m.Stderr, usage) }
	g.register(fs, m.Getenv)
	showVersion := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	m.jsonErrors = g.json
	if *showVersion {
		return m.runVersion(g, nil)
	}
	if fs.NArg() == 0 {
		fmt.Fprint(m.Stderr, usage)
		return errUsage
	}
	err := m.dispatch(ctx, g, fs.Arg(0), fs.Args()[1:])
	m.jsonErrors = g.json // --json may come after the command
	if err == errHelp || errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func (m *Main) dispatch(ctx context.Context, g *globals, cmd string, args []string) error {
	switch cmd {
	case "serve":
		return m.runServe(ctx, args)
	case "run":
		return m.runRun(ctx, g, args)
	case "acquire":
		return m.runAcquire(ctx, g, args)
	case "renew":
		return m.runRenew(ctx, g, args)
	case "release":
		return m.runRelease(ctx, g, args)
	case "status":
		return m.runStatus(ctx, g, args)
	case "ls":
		return m.runLs(ctx, g, args)
	case "watch":
		return m.runWatch(ctx, g, args)
	case "force-release":
		return m.runForceRelease(ctx, g, args)
	case "tenants":
		return m.runTenants(ctx, g, args)
	case "bench":
		return m.runBench(ctx, g, args)
	case "version":
		return m.runVersion(g, args)
	case "help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	}
	return usagef("unknown command %q", cmd)
}
