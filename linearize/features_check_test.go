package linearize

import (
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

// Hand-made histories of semaphores and multi-lock acquires.

func permit(holder string, limit int, idem string) Input {
	in := acq(holder, dlm.Shared, idem)
	in.Limit = limit
	return in
}

func many(holder, idem string, locks ...LockRef) Input {
	return Input{Kind: AcquireManyTry, Holder: holder, TTL: time.Minute, IdemKey: idem, Locks: locks}
}

func grantedMany(ls ...Granted) Output { return Output{Leases: ls} }

var (
	lockX   = LockRef{Name: "x", Mode: dlm.Exclusive}
	lockY   = LockRef{Name: "y", Mode: dlm.Exclusive}
	invalid = Output{Code: dlm.CodeInvalidArgument}
)

func TestCheckerFeatures(t *testing.T) {
	tests := []struct {
		name  string
		ok    bool
		want  string // in the violation
		build func(hs *h)
	}{
		{"a semaphore grants up to its limit", true, "", func(hs *h) {
			hs.add(1, 0, 1, permit("a", 2, ""), granted("L1", 1))
			hs.add(2, 2, 3, permit("b", 2, ""), granted("L2", 2))
			hs.add(3, 4, 5, permit("c", 2, ""), conflict)
			hs.add(3, 6, 7, permit("c", 3, ""), invalid)
			hs.add(3, 8, 9, acq("c", dlm.Exclusive, ""), invalid)
			hs.add(1, 10, 11, rel("L1"), granted("L1", 1))
			hs.add(3, 12, 13, permit("c", 2, ""), granted("L3", 3))
		}},
		{"a semaphore grants past its limit", false, "granted shared", func(hs *h) {
			hs.add(1, 0, 1, permit("a", 2, ""), granted("L1", 1))
			hs.add(2, 2, 3, permit("b", 2, ""), granted("L2", 2))
			hs.add(3, 4, 5, permit("c", 2, ""), granted("L3", 3))
		}},
		{"another limit is granted", false, "granted limit 3", func(hs *h) {
			hs.add(1, 0, 1, permit("a", 2, ""), granted("L1", 1))
			hs.add(2, 2, 3, permit("b", 3, ""), granted("L2", 2))
		}},
		{"the same limit is refused", false, "limit 2 refused", func(hs *h) {
			hs.add(1, 0, 1, permit("a", 2, ""), granted("L1", 1))
			hs.add(2, 2, 3, permit("b", 2, ""), invalid)
		}},
		{"all or nothing", true, "", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(2, 2, 3, many("b", "k", lockY, lockX), Output{Code: dlm.CodeLockConflict, Blocker: "x"})
			hs.add(3, 4, 5, Input{Kind: Inspect, Name: "y"}, inspect(0))
			hs.add(1, 6, 7, rel("L1"), granted("L1", 1))
			hs.add(2, 8, 9, many("b", "k2", lockY, lockX), grantedMany(Granted{"M1", 1}, Granted{"M2", 2}))
			hs.add(2, 10, 11, Input{Kind: Release, Name: "y", LeaseID: "M1"}, granted("M1", 1))
			hs.add(3, 12, 13, acq("c", dlm.Exclusive, ""), conflict) // x is still b's
		}},
		{"a multi-lock acquire refused by a free lock", false, "answered lock_conflict", func(hs *h) {
			hs.add(1, 0, 1, many("b", "k", lockY, lockX), Output{Code: dlm.CodeLockConflict, Blocker: "x"})
		}},
		{"a multi-lock acquire granted a held lock", false, "granted exclusive", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(2, 2, 3, many("b", "k", lockY, lockX), grantedMany(Granted{"M1", 1}, Granted{"M2", 2}))
		}},
		{"a retry replays the leases held", true, "", func(hs *h) {
			hs.add(1, 0, 0, many("b", "k", lockY, lockX), unknown)
			hs.add(1, 5, 6, many("b", "k", lockY, lockX), Output{Leases: []Granted{{"M1", 1}, {"M2", 1}}, Replayed: true})
			hs.add(2, 7, 8, acq("c", dlm.Exclusive, ""), conflict)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hs h
			tt.build(&hs)
			res := Check(hs, Options{Artifacts: t.TempDir(), Label: "unit"})
			if res.OK() != tt.ok {
				t.Fatalf("OK() = %v, want %v: %v", res.OK(), tt.ok, res.Violations)
			}
			if !tt.ok && !strings.Contains(strings.Join(res.Violations, "\n"), tt.want) {
				t.Errorf("violations do not say %q:\n%s", tt.want, strings.Join(res.Violations, "\n"))
			}
		})
	}
}
