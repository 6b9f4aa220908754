package linearize

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
)

// h builds histories by hand: times in milliseconds.
type h []Op

func (hs *h) add(client int, call, ret int, in Input, out Output) {
	in.Client = client
	if in.Name == "" {
		in.Name = "x"
	}
	op := Op{Input: in, Output: out, Call: time.Duration(call) * time.Millisecond, Return: time.Duration(ret) * time.Millisecond}
	if out.Unknown {
		op.Return = Infinite
	}
	*hs = append(*hs, op)
}

func acq(holder string, m dlm.Mode, idem string) Input {
	return Input{Kind: AcquireTry, Holder: holder, Mode: m, TTL: time.Minute, IdemKey: idem}
}

func granted(id string, token int64) Output { return Output{Lease: id, Token: token} }

func rel(id string) Input   { return Input{Kind: Release, LeaseID: id} }
func renew(id string) Input { return Input{Kind: Renew, LeaseID: id} }

func inspect(last int64, holders ...Holder) Output {
	return Output{LastToken: last, Holders: holders}
}

var (
	inspectIn = Input{Kind: Inspect}
	conflict  = Output{Code: dlm.CodeLockConflict}
	ended     = Output{Code: dlm.CodeLeaseEnded, Reason: "released"}
	unknown   = Output{Unknown: true, Err: "connection reset"}
)

func TestCheckerAcceptsLinearizableHistories(t *testing.T) {
	tests := []struct {
		name  string
		build func(hs *h)
	}{
		{"sequential", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(2, 2, 3, acq("b", dlm.Exclusive, ""), conflict)
			hs.add(1, 4, 5, renew("L1"), granted("L1", 1))
			hs.add(1, 6, 7, rel("L1"), granted("L1", 1))
			hs.add(2, 8, 9, acq("b", dlm.Exclusive, ""), granted("L2", 2))
			hs.add(1, 10, 11, rel("L1"), ended)
			hs.add(3, 12, 13, inspectIn, inspect(2, Holder{Token: 2, Mode: dlm.Exclusive, Holder: "b"}))
		}},
		{"concurrent grants may be ordered either way", func(hs *h) {
			// b's grant overlaps a's release, so it may come after it.
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(1, 2, 10, rel("L1"), granted("L1", 1))
			hs.add(2, 3, 9, acq("b", dlm.Exclusive, ""), granted("L2", 2))
		}},
		{"shared holders coexist", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Shared, ""), granted("L1", 1))
			hs.add(2, 2, 3, acq("b", dlm.Shared, ""), granted("L2", 2))
			hs.add(3, 4, 5, acq("c", dlm.Exclusive, ""), conflict)
			hs.add(3, 6, 7, inspectIn, inspect(2, Holder{Token: 1, Mode: dlm.Shared, Holder: "a"}, Holder{Token: 2, Mode: dlm.Shared, Holder: "b"}))
		}},
		{"unknown acquire that happened, then replayed", func(hs *h) {
			hs.add(1, 0, 0, acq("a", dlm.Exclusive, "k1"), unknown)
			hs.add(2, 5, 6, acq("b", dlm.Exclusive, ""), conflict)
			hs.add(1, 7, 8, acq("a", dlm.Exclusive, "k1"), Output{Lease: "L1", Token: 1, Replayed: true})
			hs.add(1, 9, 10, rel("L1"), granted("L1", 1))
			hs.add(2, 11, 12, acq("b", dlm.Exclusive, ""), granted("L2", 2))
		}},
		{"unknown acquire that did not happen", func(hs *h) {
			hs.add(1, 0, 0, acq("a", dlm.Exclusive, "k1"), unknown)
			hs.add(2, 5, 6, acq("b", dlm.Exclusive, ""), granted("L2", 1))
			hs.add(2, 7, 8, rel("L2"), granted("L2", 1))
		}},
		{"unknown release", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(1, 2, 2, rel("L1"), unknown)
			hs.add(1, 3, 4, rel("L1"), ended)
			hs.add(2, 5, 6, acq("b", dlm.Exclusive, ""), granted("L2", 2))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hs h
			tt.build(&hs)
			res := Check(hs, Options{Artifacts: t.TempDir()})
			if !res.OK() {
				t.Errorf("rejected a linearizable history:\n%s", strings.Join(res.Violations, "\n"))
			}
		})
	}
}

func TestCheckerRejectsViolations(t *testing.T) {
	tests := []struct {
		name  string
		build func(hs *h)
		want  string // in the report
	}{
		{"two exclusive holders", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(2, 2, 3, acq("b", dlm.Exclusive, ""), granted("L2", 2))
		}, "granted exclusive while"},
		{"exclusive joins shared", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Shared, ""), granted("L1", 1))
			hs.add(2, 2, 3, acq("b", dlm.Exclusive, ""), granted("L2", 2))
		}, "granted exclusive while"},
		{"token repeated after release", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(1, 2, 3, rel("L1"), granted("L1", 1))
			hs.add(2, 4, 5, acq("b", dlm.Exclusive, ""), granted("L2", 1))
		}, "token 1 given to two leases"},
		{"token goes down", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Shared, ""), granted("L1", 5))
			hs.add(2, 2, 3, acq("b", dlm.Shared, ""), granted("L2", 4))
		}, "token went down"},
		{"acknowledged grant lost", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(2, 2, 3, inspectIn, inspect(1))
		}, "inspect shows holders"},
		{"renew after release", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
			hs.add(1, 2, 3, rel("L1"), granted("L1", 1))
			hs.add(1, 4, 5, renew("L1"), granted("L1", 1))
		}, "succeeded but it holds nothing"},
		{"conflict on a free lock", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), conflict)
		}, "answered lock_conflict while"},
		{"replay returns another lease", func(hs *h) {
			hs.add(1, 0, 1, acq("a", dlm.Exclusive, "k"), granted("L1", 1))
			hs.add(1, 2, 3, acq("a", dlm.Exclusive, "k"), Output{Lease: "L2", Token: 2, Replayed: true})
		}, "replay of key k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var hs h
			tt.build(&hs)
			res := Check(hs, Options{Artifacts: dir, Label: "unit"})
			if res.OK() {
				t.Fatal("accepted a history that is not linearizable")
			}
			report := strings.Join(res.Violations, "\n")
			if !strings.Contains(report, tt.want) {
				t.Errorf("report does not say %q:\n%s", tt.want, report)
			}
			for _, p := range res.Visualizations {
				if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
					t.Errorf("visualisation %s: %v", p, err)
				}
			}
		})
	}
}

func TestCheckerReportIsReadable(t *testing.T) {
	var hs h
	hs.add(1, 0, 1, acq("a", dlm.Exclusive, ""), granted("L1", 1))
	hs.add(2, 2, 3, acq("b", dlm.Exclusive, ""), granted("L2", 2))
	res := Check(hs, Options{Artifacts: t.TempDir()})
	report := strings.Join(res.Violations, "\n")
	for _, want := range []string{
		"lock x: history of 2 operations is not linearizable",
		"c1 acquire-try(a exclusive) -> ok L1 t1",
		"=> last=1 holders=[a:exclusive:L1:t1]",
		"none of these can come next",
		"c2 acquire-try(b exclusive) -> ok L2 t2",
		"because granted exclusive while last=1",
		"visualisation: ",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if len(res.Visualizations) != 1 {
		t.Errorf("visualisations = %v, want one", res.Visualizations)
	}
	t.Logf("a report looks like this:\n%s", report)
}
