package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	for _, c := range []struct {
		name string
		bi   debug.BuildInfo
		want Info
	}{
		{"tagged", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"}}},
			Info{"v1.2.0", "abc123", "go1.26.8"}},
		{"dirty", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261202-abc123+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}},
			Info{"v0.0.0-20261202-abc123+dirty", "abc123-dirty", "go1.26.8"}},
		{"unstamped", debug.BuildInfo{}, Info{"(devel)", "unknown", runtime.Version()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := fromBuildInfo(&c.bi); got != c.want {
				t.Errorf("fromBuildInfo = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestGet(t *testing.T) {
	in := Get()
	if in.Version == "" || in.Revision == "" || in.Go != runtime.Version() {
		t.Errorf("Get() = %+v: every field must be set, Go must be %s", in, runtime.Version())
	}
}
