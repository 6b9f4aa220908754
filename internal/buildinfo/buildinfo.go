// Package buildinfo says which build of dlm is running, from what the Go
// toolchain stamped into the binary: the module version, the VCS revision
// and the Go version. It backs `dlm version`, the dlm_build_info metric and
// the version in /healthz, so that all three always agree.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Info describes one build.
type Info struct {
	// Version is the main module's version: a tag such as v1.2.0, a
	// pseudo-version for an untagged commit (with "+dirty" when the work
	// tree had changes), or "(devel)" when the toolchain stamped none.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from, with
	// "-dirty" when the work tree had uncommitted changes, or "unknown"
	// (a test binary, a build with -buildvcs=false).
	Revision string `json:"revision"`
	// Go is the Go version that built the binary, e.g. "go1.26.8".
	Go string `json:"go"`
}

// Get returns the running binary's build information. It never fails:
// missing parts read "(devel)" and "unknown".
var Get = sync.OnceValue(func() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "(devel)", Revision: "unknown", Go: runtime.Version()}
	}
	return fromBuildInfo(bi)
})

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Version: bi.Main.Version, Revision: "unknown", Go: bi.GoVersion}
	if in.Version == "" {
		in.Version = "(devel)"
	}
	if in.Go == "" {
		in.Go = runtime.Version()
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && in.Revision != "unknown" {
		in.Revision += "-dirty"
	}
	return in
}
