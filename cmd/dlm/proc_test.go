package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// dlmProc is a dlm client process started by a test.
type dlmProc struct {
	cmd    *exec.Cmd
	stdout *lineReader
	stderr dlmtest.Buffer
	done   chan struct{}
	code   int
}

// startDLM starts the dlm binary with args against server s, with the
// tenant key.
func startDLM(t testing.TB, s *testserver.Server, args ...string) *dlmProc {
	t.Helper()
	p := &dlmProc{cmd: exec.Command(dlmtest.Binary(t), args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "DLM_URL="+s.URL, "DLM_KEY="+s.TenantKey)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.stdout = newLineReader(out)
	go func() {
		p.stdout.wait()
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *dlmProc) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("dlm %q still running after %v; stderr:\n%s", p.cmd.Args[1:], d, p.stderrString())
		return -1
	}
}

func (p *dlmProc) stderrString() string { return p.stderr.String() }

// lineReader collects a process's output lines and lets a test wait for one.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	more  chan struct{} // closed and replaced on every new line
	eof   chan struct{}
}

func newLineReader(r io.Reader) *lineReader {
	lr := &lineReader{more: make(chan struct{}), eof: make(chan struct{})}
	go func() {
		defer close(lr.eof)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.mu.Lock()
			lr.lines = append(lr.lines, sc.Text())
			close(lr.more)
			lr.more = make(chan struct{})
			lr.mu.Unlock()
		}
	}()
	return lr
}

func (lr *lineReader) wait() { <-lr.eof }

// waitLine waits up to d for a line containing s and returns it.
func (lr *lineReader) waitLine(t testing.TB, s string, d time.Duration) string {
	t.Helper()
	l, ok := lr.find(s, d)
	if !ok {
		t.Fatalf("no line with %q within %v: %q", s, d, lr.all())
	}
	return l
}

// find waits up to d for a line containing s.
func (lr *lineReader) find(s string, d time.Duration) (string, bool) {
	timeout := time.After(d)
	for i := 0; ; {
		lr.mu.Lock()
		for ; i < len(lr.lines); i++ {
			if strings.Contains(lr.lines[i], s) {
				l := lr.lines[i]
				lr.mu.Unlock()
				return l, true
			}
		}
		more := lr.more
		lr.mu.Unlock()
		select {
		case <-more:
		case <-lr.eof:
			lr.mu.Lock()
			n := len(lr.lines)
			lr.mu.Unlock()
			if i == n {
				return "", false
			}
		case <-timeout:
			return "", false
		}
	}
}

func (lr *lineReader) all() []string {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return append([]string(nil), lr.lines...)
}

// apiClient returns a Go client of s with key.
func apiClient(t testing.TB, s *testserver.Server, key string) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
