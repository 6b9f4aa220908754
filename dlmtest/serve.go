package dlmtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/wire"
)

// The helpers in this file run `dlm serve` as a real process, for the tests
// that kill it, restart it or run several of it.

var (
	binOnce sync.Once
	binPath string
	binDir  string // what Main removes
	binErr  error
)

// Binary returns the dlm command for tests to run: $DLM_TEST_BIN, or
// ./cmd/dlm built on the first call of the test binary, with the race
// detector when the tests run with it. A package that calls it runs its tests
// through Main, which removes the build.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binPath = os.Getenv("DLM_TEST_BIN"); binPath != "" {
			return
		}
		if binDir, binErr = os.MkdirTemp("", "dlm-test-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "dlm")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "github.com/dlmhq/dlm/cmd/dlm")...).CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("building dlm: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// Main runs a package's tests (call it from TestMain) and then removes the
// binary that Binary built.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// ServeOptions configure StartServe. The zero value is a server on a free
// port with a fresh data directory.
type ServeOptions struct {
	// Dir is the data directory. Default: a fresh t.TempDir(). Pass the
	// Dir of a stopped Server to restart on its data.
	Dir string
	// Listen is the address. Default: 127.0.0.1:0, a free port.
	Listen string
	// Args are more flags of dlm serve, such as --postgres URL.
	Args []string
	// Env are more variables (NAME=value) on top of the test's own
	// environment, such as DLM_ADMIN_KEY.
	Env []string
}

// Server is a running `dlm serve` process. The test's cleanup stops it
// (SIGTERM, then SIGKILL after 15 s) and, if the test failed, logs its
// output.
type Server struct {
	URL            string // the address it printed, e.g. http://127.0.0.1:41234
	Dir            string // its data directory
	Stdout, Stderr Buffer

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
	exit error         // the process's exit, once done is closed
}

// ErrExited is wrapped by StartServe's error when the process ended before
// it listened.
var ErrExited = errors.New("dlm serve exited before it listened")

// startTimeout bounds how long a server may take to print its address: a
// race-instrumented build under a loaded machine and a first migration of a
// PostgreSQL schema take seconds, never a minute.
const startTimeout = time.Minute

// StartServe runs dlm serve with o and returns once it prints the address it
// listens on, which it does only after its store is open and its keys made.
// If the process exits before that, the error wraps ErrExited and carries
// the output; a test that must not see that uses MustServe.
func StartServe(t testing.TB, o ServeOptions) (*Server, error) {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	args := append([]string{"serve", "--listen", o.Listen, "--data-dir", o.Dir}, o.Args...)
	s := &Server{Dir: o.Dir, t: t, cmd: exec.Command(Binary(t), args...), done: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), o.Env...)
	pr, pw := io.Pipe()
	s.cmd.Stdout = io.MultiWriter(&s.Stdout, pw)
	s.cmd.Stderr = &s.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting dlm serve: %w", err)
	}
	go func() {
		s.exit = s.cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	t.Cleanup(s.stop)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "dlm: listening on "); ok {
				found <- u
			}
		}
		io.Copy(io.Discard, pr)
	}()
	timeout := time.NewTimer(startTimeout)
	defer timeout.Stop()
	select {
	case s.URL = <-found:
		return s, nil
	case <-s.done:
		return s, fmt.Errorf("%w (%v)\n%s", ErrExited, s.exit, s.Output())
	case <-timeout.C:
		s.Kill()
		return s, fmt.Errorf("dlm serve did not print its address within %v\n%s", startTimeout, s.Output())
	}
}

// MustServe is StartServe that fails the test if the server does not start.
func MustServe(t testing.TB, o ServeOptions) *Server {
	t.Helper()
	s, err := StartServe(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Output is the process's stdout and stderr so far, for failure messages.
func (s *Server) Output() string {
	return fmt.Sprintf("stdout:\n%s\nstderr:\n%s", s.Stdout.String(), s.Stderr.String())
}

// Wait waits for the process to exit and returns how it exited (nil for
// status 0).
func (s *Server) Wait() error {
	<-s.done
	return s.exit
}

// Signal sends sig to the process and waits up to 30 s for it to exit,
// then returns how it exited (nil for status 0).
func (s *Server) Signal(sig syscall.Signal) error {
	s.t.Helper()
	s.cmd.Process.Signal(sig)
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	select {
	case <-s.done:
		return s.exit
	case <-timeout.C:
		s.t.Fatalf("dlm serve did not exit within 30s of %v\n%s", sig, s.Output())
		return nil
	}
}

// Notify sends sig to the process without waiting for anything, for a
// signal it handles and lives on, such as SIGHUP.
func (s *Server) Notify(sig syscall.Signal) error { return s.cmd.Process.Signal(sig) }

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// stop ends the process gracefully, or kills it if that takes 15 s.
func (s *Server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	select {
	case <-s.done:
	case <-timeout.C:
		s.Kill()
	}
	if s.t.Failed() {
		s.t.Logf("dlm serve on %s:\n%s", s.Dir, s.Output())
	}
}

// Credentials reads the credentials.json that the first start of a server
// wrote into the data directory dir, and fails the test if it is missing or
// has no tenant key.
func Credentials(t testing.TB, dir string) wire.Credentials {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, wire.CredentialsFile))
	if err != nil {
		t.Fatalf("reading the credentials: %v", err)
	}
	var c wire.Credentials
	if err := json.Unmarshal(b, &c); err != nil || c.TenantKey == "" {
		t.Fatalf("%s: %v %s", wire.CredentialsFile, err, b)
	}
	return c
}
