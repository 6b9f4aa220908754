package linearize_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// privatePostgres is a PostgreSQL server of this test's own, in a temporary
// directory on a free port, so that it can be restarted and crashed without
// disturbing the shared server that other packages' tests use at the same
// time (go test runs packages in parallel).
type privatePostgres struct {
	t    testing.TB
	bin  string // directory of initdb, pg_ctl, postgres
	dir  string
	data string
	port int
	as   *user.User // the user the server runs as (postgres refuses root)
}

// pgBinDir finds the PostgreSQL server binaries: pg_config's bindir, or the
// newest /usr/lib/postgresql/*/bin.
func pgBinDir() string {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no PostgreSQL server binaries (initdb) in CI")
		}
		t.Skip("no PostgreSQL server binaries (initdb)")
	}
	p := &privatePostgres{t: t, bin: bin, port: portOf(freeAddr(t))}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root and there is no postgres user to run a server as: %v", err)
		}
		p.as = u
	}
	dir, err := os.MkdirTemp("", "dlm-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir, p.data = dir, filepath.Join(dir, "data")
	t.Cleanup(func() {
		p.pgctl("stop", "-m", "immediate")
		os.RemoveAll(dir)
	})
	if p.as != nil {
		uid, _ := strconv.Atoi(p.as.Uid)
		gid, _ := strconv.Atoi(p.as.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := p.run("initdb", "-D", p.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.start()
	return p
}

func portOf(addr string) int {
	_, port, _ := strings.Cut(addr, ":")
	n, _ := strconv.Atoi(port)
	return n
}

// URL is the connection URL of the server's default database.
func (p *privatePostgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// run runs a PostgreSQL binary as the server's user.
func (p *privatePostgres) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	if p.as != nil {
		cmd = exec.Command("runuser", append([]string{"-u", p.as.Username, "--", filepath.Join(p.bin, name)}, args...)...)
	}
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

func (p *privatePostgres) pgctl(args ...string) ([]byte, error) {
	return p.run("pg_ctl", append([]string{"-D", p.data}, args...)...)
}

// start starts the server and waits until it accepts connections.
func (p *privatePostgres) start() {
	p.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", p.port, p.dir)
	if out, err := p.pgctl("start", "-w", "-t", "60", "-o", opts, "-l", filepath.Join(p.dir, "log")); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
		p.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// restart stops the server (fast: connections are cut, transactions in
// flight roll back) and starts it again.
func (p *privatePostgres) restart() {
	p.t.Helper()
	if out, err := p.pgctl("stop", "-w", "-m", "fast"); err != nil {
		p.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
	p.start()
}

// crash SIGKILLs the postmaster (its backends follow: crash recovery on the
// next start replays the WAL) and starts it again.
func (p *privatePostgres) crash() {
	p.t.Helper()
	b, err := os.ReadFile(filepath.Join(p.data, "postmaster.pid"))
	if err != nil {
		p.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		p.t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			p.t.Fatal("postmaster still alive 30s after SIGKILL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Its backends may still hold the shared memory a moment.
	for {
		if _, err := p.pgctl("status"); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.start()
}
