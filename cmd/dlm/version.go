package main

import (
	"fmt"

	"github.com/dlmhq/dlm/internal/buildinfo"
)

// runVersion prints which build this is: the version, the VCS revision
// and the Go version, the labels of the server's dlm_build_info metric.
func (m *Main) runVersion(g *globals, args []string) error {
	fs := m.newFlagSet(g, "version", "", "Prints the version of dlm, the commit it was built from and the Go version.\n")
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	bi := buildinfo.Get()
	if g.json {
		printJSON(m.Stdout, bi)
		return nil
	}
	fmt.Fprintf(m.Stdout, "dlm %s (revision %s, %s)\n", bi.Version, bi.Revision, bi.Go)
	return nil
}
