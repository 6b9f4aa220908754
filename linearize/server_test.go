package linearize_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/linearize"
)

// dlmBin is the dlm binary the process tests run: $DLM_TEST_BIN, or one
// built from ./cmd/dlm the first time a test needs it (not in processes that
// only fuzz or run in-process tests).
var (
	dlmBin     string
	dlmBinErr  string // why there is none
	dlmBinOnce sync.Once
	dlmBinDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if dlmBinDir != "" {
		os.RemoveAll(dlmBinDir)
	}
	os.Exit(code)
}

func buildBinary() {
	if b := os.Getenv("DLM_TEST_BIN"); b != "" {
		dlmBin = b
		return
	}
	if _, err := os.Stat("../cmd/dlm"); err != nil {
		dlmBinErr = "no ../cmd/dlm to build"
		return
	}
	dir, err := os.MkdirTemp("", "dlm-linearize-bin-")
	if err != nil {
		dlmBinErr = err.Error()
		return
	}
	dlmBinDir = dir
	bin := filepath.Join(dir, "dlm")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/dlm").CombinedOutput(); err != nil {
		dlmBinErr = fmt.Sprintf("building dlm: %v\n%s", err, out)
		return
	}
	dlmBin = bin
}

// adminKey is given to every server as DLM_ADMIN_KEY.
const adminKey = "linearize-admin-key-0123456789"

// server is one `dlm serve` process on a fixed port and data directory, so
// that it can be killed and started again in its place.
type server struct {
	t       testing.TB
	dataDir string
	addr    string
	extra   []string // more flags
	env     []string
	key     string // the tenant key, if another instance made it

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *dlmtest.Buffer
	exit chan struct{} // closed when the process has been waited for
}

// needBinary builds dlm once, or fails the test if the build fails, or
// skips it if the module has no cmd/dlm.
func needBinary(t testing.TB) {
	t.Helper()
	dlmBinOnce.Do(buildBinary)
	switch {
	case dlmBin != "":
	case strings.HasPrefix(dlmBinErr, "building"):
		t.Fatal(dlmBinErr)
	default:
		t.Skipf("no dlm binary (%s); set DLM_TEST_BIN to run the process tests", dlmBinErr)
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newServer starts dlm serve on a fresh data directory and stops it at the
// end of the test.
func newServer(t testing.TB, extra ...string) *server {
	t.Helper()
	needBinary(t)
	s := &server{t: t, dataDir: t.TempDir(), addr: freeAddr(t), extra: extra, logs: &dlmtest.Buffer{}}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) URL() string { return "http://" + s.addr }

// start runs the process and waits until it is ready. A process that
// exits before it is ready (its database restarting under it, say) is
// started again, as a supervisor would, for up to a minute.
func (s *server) start() {
	s.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		exit := s.spawn()
		err := s.waitReady(exit, deadline)
		if err == nil {
			return
		}
		if !errors.Is(err, errExited) || time.Now().After(deadline) {
			s.t.Fatalf("dlm serve: %v:\n%s", err, s.logs)
		}
		s.t.Logf("dlm serve exited before it was ready; starting it again")
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *server) spawn() chan struct{} {
	s.t.Helper()
	args := append([]string{"serve", "--listen", s.addr, "--data-dir", s.dataDir, "--log-level", "warn"}, s.extra...)
	cmd := exec.Command(dlmBin, args...)
	cmd.Env = append(os.Environ(), "DLM_ADMIN_KEY="+adminKey)
	cmd.Env = append(cmd.Env, s.env...)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting dlm: %v", err)
	}
	exit := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()
	return exit
}

var errExited = errors.New("exited before it was ready")

// waitReady polls /readyz (there is no signal to wait on across processes)
// until it answers 200, the process exits, or the deadline passes.
func (s *server) waitReady(exit chan struct{}, deadline time.Time) error {
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(s.URL() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-exit:
			return errExited
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("not ready after a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (s *server) kill() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exit
}

// stop ends the process gracefully (SIGTERM), or kills it after a while.
func (s *server) stop() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exit:
	case <-time.After(15 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-exit
	}
	if s.t.Failed() {
		s.t.Logf("dlm serve output:\n%s", s.logs)
	}
}

// tenantKey reads the default tenant's key that the first start saved (or
// returns the key set for an instance that joined a store made by another).
func (s *server) tenantKey() string {
	s.t.Helper()
	if s.key != "" {
		return s.key
	}
	b, err := os.ReadFile(filepath.Join(s.dataDir, "credentials.json"))
	if err != nil {
		s.t.Fatalf("reading the credentials: %v", err)
	}
	var c struct {
		TenantKey string `json:"tenant_key"`
		Tenant    string `json:"tenant"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.TenantKey == "" {
		s.t.Fatalf("credentials.json: %v %s", err, b)
	}
	return c.TenantKey
}

// target is an HTTP client of s (or of url, if given).
func (s *server) target(url func() string) *linearize.HTTPTarget {
	if url == nil {
		url = s.URL
	}
	return &linearize.HTTPTarget{
		URL: url, Key: s.tenantKey(), AdminKey: adminKey, Tenant: "default",
		Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
}

func TestHTTPLinearizable(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 8, Ops: 150, Wait: true, Force: true, Seed: 11}
	st := w.Run(t.Context(), s.target(nil), rec)
	t.Logf("workload: %v", st)
	if st.Unknown.Load() != 0 {
		t.Errorf("%d operations got no answer from a healthy server", st.Unknown.Load())
	}
	mustCheck(t, "http", rec.Ops())
}

func TestHTTPExpiryEdges(t *testing.T) {
	s := newServer(t)
	x := linearize.ExpiryEdges{Locks: 4, Rounds: 6, Seed: 12}
	st, viol := x.Run(t.Context(), s.target(nil))
	t.Logf("expiry edges over HTTP: %v", st)
	for _, v := range viol {
		t.Error(v)
	}
}
