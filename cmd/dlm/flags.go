package main

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/client"
	"github.com/dlmhq/dlm/wire"
)

// globals are the flags every command accepts.
type globals struct {
	url, key, dataDir string
	caCert            string // PEM file of CAs to trust for https, beside the system's
	json              bool
}

// register adds the global flags to fs. The first call takes the defaults
// from the environment; later calls (a command's own flag set) keep the
// values parsed so far, so global flags may come before or after the command.
func (g *globals) register(fs *flag.FlagSet, getenv func(string) string) {
	if getenv != nil {
		g.url, g.key, g.dataDir = getenv("DLM_URL"), getenv("DLM_KEY"), getenv("DLM_DATA_DIR")
		g.caCert = getenv("DLM_CA_CERT")
		if g.url == "" {
			g.url = client.DefaultURL
		}
		if g.dataDir == "" {
			g.dataDir = client.DefaultDataDir
		}
	}
	fs.StringVar(&g.url, "url", g.url, "server `URL` (env DLM_URL)")
	fs.StringVar(&g.key, "key", g.key, "API `key` (env DLM_KEY; default from the data directory's credentials.json)")
	fs.StringVar(&g.dataDir, "data-dir", g.dataDir, "data `directory` holding credentials.json (env DLM_DATA_DIR)")
	fs.StringVar(&g.caCert, "ca-cert", g.caCert, "PEM `file` of CA certificates to trust for an https:// URL besides the system's (env DLM_CA_CERT)")
	fs.BoolVar(&g.json, "json", g.json, "print JSON, one object per line")
}

// client returns a client for the server at --url. Without --key or
// DLM_KEY it uses the key from the data directory's credentials.json: the
// admin key if admin, the default tenant's key otherwise.
func (g *globals) client(admin bool) (*client.Client, error) {
	key, err := g.apiKey(admin)
	if err != nil {
		return nil, err
	}
	// A person at a shell would rather see an error than wait out a long
	// outage: give up retrying after 10s.
	return client.New(g.url, key, &client.Options{RetryTimeout: 10 * time.Second, CACertFile: g.caCert})
}

// apiKey returns --key or DLM_KEY, or else the key in the data directory's
// credentials.json: the admin key if admin, the default tenant's otherwise.
func (g *globals) apiKey(admin bool) (string, error) {
	if g.key != "" {
		return g.key, nil
	}
	creds, err := client.ReadCredentials(g.dataDir)
	if err != nil {
		return "", err
	}
	if !admin {
		return creds.TenantKey, nil
	}
	if creds.AdminKey == "" {
		return "", fmt.Errorf("no admin key in %s: the server was given its admin key (DLM_ADMIN_KEY) and keeps only keys it made; pass it with --key or DLM_KEY", filepath.Join(g.dataDir, wire.CredentialsFile))
	}
	return creds.AdminKey, nil
}

// newFlagSet returns the flag set of one command, with the global flags.
func (m *Main) newFlagSet(g *globals, name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(m.Stderr, "Usage: dlm %s %s\n\n%s\nFlags:\n", name, synopsis, about)
		fs.PrintDefaults()
	}
	g.register(fs, nil)
	return fs
}

// parseFlags parses args into fs, allowing flags between positional
// arguments, and returns the positional arguments. want is how many there
// must be (-1: any). --help prints the usage and ends with errHelp.
func parseFlags(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if want >= 0 && len(pos) != want {
		fs.Usage()
		return nil, errUsage
	}
	return pos, nil
}

// parseLockName parses args into fs like parseFlags and returns the one
// positional argument, a lock name. A malformed name is a usage error (exit
// 64), found before anything is sent.
func parseLockName(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return "", err
	}
	if err := dlm.ValidateName(pos[0]); err != nil {
		return "", usagef("lock %q: %v", pos[0], err)
	}
	return pos[0], nil
}

// parseLockNames is parseLockName for one or more names.
func parseLockNames(fs *flag.FlagSet, args []string) ([]string, error) {
	pos, err := parseFlags(fs, args, -1)
	if err != nil {
		return nil, err
	}
	if len(pos) == 0 {
		fs.Usage()
		return nil, errUsage
	}
	for _, n := range pos {
		if err := dlm.ValidateName(n); err != nil {
			return nil, usagef("lock %q: %v", n, err)
		}
	}
	return pos, nil
}

// errHelp ends a command that printed its --help: exit 0.
var errHelp = &exitCodeError{code: 0, quiet: true, err: errors.New("help")}

// waitFlag is the --wait of acquire and run: how long to queue for a lock.
// Its default is "forever"; 0 means try once.
type waitFlag struct {
	d   time.Duration
	set bool
}

func (w *waitFlag) String() string {
	if !w.set {
		return "forever"
	}
	return w.d.String()
}

func (w *waitFlag) Set(s string) error {
	if s == "forever" {
		*w = waitFlag{}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("want a duration such as 30s, 0 (try once) or forever")
	}
	*w = waitFlag{d: d, set: true}
	return nil
}

// scopeFlag is --scope: tenant (default) or global.
type scopeFlag client.Scope

func (s *scopeFlag) String() string {
	if *s == "" {
		return string(client.ScopeTenant)
	}
	return string(*s)
}

func (s *scopeFlag) Set(v string) error {
	switch client.Scope(strings.ToLower(v)) {
	case client.ScopeTenant, client.ScopeGlobal:
		*s = scopeFlag(strings.ToLower(v))
		return nil
	}
	return fmt.Errorf("want tenant or global")
}
