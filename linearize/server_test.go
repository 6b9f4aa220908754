package linearize_test

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/linearize"
)

func TestMain(m *testing.M) { dlmtest.Main(m) }

// adminKey is given to every server as DLM_ADMIN_KEY.
const adminKey = "linearize-admin-key-0123456789"

// server is one `dlm serve` process on a fixed port and data directory, so
// that it can be killed and started again in its place.
type server struct {
	t       testing.TB
	dataDir string
	addr    string
	extra   []string // more flags
	key     string   // the tenant key, if another instance made it

	mu   sync.Mutex
	proc *dlmtest.Server // the process now, nil once killed
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

// newServer starts dlm serve on a fresh data directory; the test's cleanup
// stops it.
func newServer(t testing.TB, extra ...string) *server {
	t.Helper()
	s := &server{t: t, dataDir: t.TempDir(), addr: freeAddr(t), extra: extra}
	s.start()
	return s
}

func (s *server) URL() string { return "http://" + s.addr }

// start runs the process and waits until it listens. A process that exits
// before that (its database restarting under it, say) is started again, as
// a supervisor would, for up to a minute.
func (s *server) start() {
	s.t.Helper()
	o := dlmtest.ServeOptions{Dir: s.dataDir, Listen: s.addr, Args: append([]string{"--log-level", "warn"}, s.extra...), Env: []string{"DLM_ADMIN_KEY=" + adminKey}}
	for deadline := time.Now().Add(time.Minute); ; {
		p, err := dlmtest.StartServe(s.t, o)
		if err == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return
		}
		if !errors.Is(err, dlmtest.ErrExited) || time.Now().After(deadline) {
			s.t.Fatal(err)
		}
		s.t.Logf("dlm serve exited before it listened; starting it again")
		time.Sleep(200 * time.Millisecond)
	}
}

// kill SIGKILLs the process and waits for it to be gone.
func (s *server) kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// tenantKey is the default tenant's key that the first start saved (or the
// key set for an instance that joined a store made by another).
func (s *server) tenantKey() string {
	s.t.Helper()
	if s.key != "" {
		return s.key
	}
	return dlmtest.Credentials(s.t, s.dataDir).TenantKey
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

// TestHTTPLinearizableFeatures: semaphores and blocking multi-lock
// acquires (POST /v1/acquire) among waits and force-releases over HTTP.
func TestHTTPLinearizableFeatures(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	rec := linearize.NewRecorder()
	w := linearize.Workload{Clients: 8, Ops: 150, Limit: 2, Multi: true, Wait: true, Force: true, Locks: []string{"lin/a", "lin/b", "lin/c"}, Seed: 49}
	st := w.Run(t.Context(), s.target(nil), rec)
	t.Logf("workload: %v", st)
	if st.Unknown.Load() != 0 {
		t.Errorf("%d operations got no answer from a healthy server", st.Unknown.Load())
	}
	mustCheck(t, "http-features", rec.Ops())
}
