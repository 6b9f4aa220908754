// Command dlm is the dlm lock server and its command-line client.
//
// Usage:
//
//	dlm serve [flags]    run the server (see dlm serve -h)
//	dlm help             show the commands
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// Main is the dlm command with its environment, so that main() and tests
// run the very same code.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment; tests pass their own.
	Getenv func(string) string
}

// command is one subcommand of dlm.
type command struct {
	run     func(m *Main, ctx context.Context, args []string) error
	summary string
}

// commands is the dispatch table of dlm's subcommands. It is filled in init
// because help lists it.
var commands map[string]command

func init() {
	commands = map[string]command{
		"serve": {(*Main).runServe, "run the lock server"},
		"help":  {(*Main).runHelp, "show this help"},
	}
}

// errUsage reports a command line that could not be understood; the message
// has been printed already.
var errUsage = errors.New("usage")

func main() {
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	err := m.Run(context.Background(), os.Args[1:])
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "dlm:", err)
		os.Exit(1)
	}
}

// Run runs the subcommand named by args[0] with the rest of args. ctx ends
// the command (serve also stops on SIGINT and SIGTERM by itself).
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		m.usage(m.Stderr)
		return errUsage
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(m.Stderr, "dlm: unknown command %q\n\n", args[0])
		m.usage(m.Stderr)
		return errUsage
	}
	return c.run(m, ctx, args[1:])
}

func (m *Main) runHelp(ctx context.Context, args []string) error {
	m.usage(m.Stdout)
	return nil
}

func (m *Main) usage(w io.Writer) {
	fmt.Fprintln(w, "dlm is a distributed lock manager.\n\nUsage: dlm <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'dlm <command> -h' for a command's flags.")
}
