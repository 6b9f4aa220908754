// Package linearize records what concurrent clients of dlm saw and checks
// that history against a sequential model of a lock, Jepsen style: every
// operation has an invocation and a response time, and the history must be
// explainable by some order of atomic steps that respects real time
// (linearizability), checked with github.com/anishathalye/porcupine.
//
// The model is one lock (the guarantees of RELIABILITY.md): holders with modes and fencing tokens and
// the last token issued. A history is split by lock name and each part is
// checked on its own. Operations that got no answer (a killed server, a cut
// connection, 503) have an unknown outcome: the checker considers both that
// they happened, at any moment after their invocation, and that they did
// not. Time-based expiry is not part of the model: checked runs use TTLs
// longer than the run, and expiry edges are tested separately.
package linearize

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dlmhq/dlm"
)

// Kind is an operation of the model.
type Kind uint8

// Operations a history may contain.
const (
	AcquireTry      Kind = iota + 1 // acquire with wait 0
	AcquireWait                     // acquire that may queue up to Input.Wait
	Renew                           // renew Input.LeaseID
	Release                         // release Input.LeaseID
	Inspect                         // inspect the lock
	ForceRelease                    // admin: end every lease on the lock
	AcquireManyTry                  // multi-lock acquire of Input.Locks with wait 0
	AcquireManyWait                 // multi-lock acquire that may queue up to Input.Wait
)

var kindNames = [...]string{
	AcquireTry: "acquire-try", AcquireWait: "acquire-wait", Renew: "renew",
	Release: "release", Inspect: "inspect", ForceRelease: "force-release",
	AcquireManyTry: "acquire-many-try", AcquireManyWait: "acquire-many-wait",
}

// many reports whether k is a multi-lock acquire.
func (k Kind) many() bool { return k == AcquireManyTry || k == AcquireManyWait }

// String returns the name used in reports.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Input is what a client asked.
type Input struct {
	Kind    Kind
	Client  int    // which client asked; also the row of the visualisation
	Name    string // lock name: the history is checked per name
	Holder  string // holder_id of acquires
	Mode    dlm.Mode
	TTL     time.Duration
	Wait    time.Duration
	IdemKey string // idempotency key of acquires, "" for none
	LeaseID string // lease of renew and release
	Limit   int    // semaphore limit of a shared acquire, 0 for none
	// Locks are the locks of a multi-lock acquire (Name is unused); Mode
	// and Limit are each lock's.
	Locks []LockRef
	// Group is set by Check on the part of a multi-lock acquire it checks
	// in one lock's history: how many locks the acquire asked for.
	Group int
}

// LockRef is one lock of a multi-lock acquire.
type LockRef struct {
	Name  string
	Mode  dlm.Mode
	Limit int
}

// Granted is one lease of a multi-lock acquire's answer.
type Granted struct {
	Lease string
	Token int64
}

// Holder is one holder as inspect shows it (without its lease ID).
type Holder struct {
	Token   int64
	Mode    dlm.Mode
	Holder  string
	Expires time.Time // not part of the model; for expiry checks
}

// Output is what the client was answered.
type Output struct {
	// Unknown is set when no answer came (a transport error, a killed
	// server, a 5xx): the operation may or may not have taken effect.
	Unknown bool
	// Code is "" for success, else the error code (dlm.Code*).
	Code string
	// Reason is details.reason of lease_ended.
	Reason string
	// Acquire, renew and release: the lease ID and token answered.
	Lease      string
	Token      int64
	Replayed   bool
	AcquiredAt time.Time
	ExpiresAt  time.Time
	// Inspect: the last token issued and the holders. ForceRelease: the
	// tokens of the leases it ended, in Holders.
	LastToken int64
	Holders   []Holder
	// Leases are a multi-lock acquire's, in the order of Input.Locks.
	Leases []Granted
	// Blocker is the lock that a multi-lock acquire's lock_conflict or
	// wait_timeout names (details.name).
	Blocker string
	// Err is the transport error of an unknown outcome, for reports.
	Err string
	// NotSent marks an unknown outcome whose request certainly never
	// reached the server (the connection was refused): Check drops it.
	NotSent bool
	// Status is the HTTP status of an answer over HTTP, 0 if none came.
	Status int
}

// Op is one recorded operation. Call and Return are offsets from the start
// of the recording; Return is Infinite for an unknown outcome.
type Op struct {
	Input
	Output
	Call, Return time.Duration
	// Wall is the wall-clock time of the call, for expiry checks.
	Wall time.Time
}

// Infinite is the Return of an operation that never got an answer: it may
// take effect at any moment after its call.
const Infinite = time.Duration(1<<63 - 1)

// Recorder collects a history from many goroutines. The zero value is not
// ready: use NewRecorder.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewRecorder starts a recording now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Call is an operation in flight.
type Call struct {
	r  *Recorder
	op Op
}

// Begin records the invocation of in and returns the call to End.
func (r *Recorder) Begin(in Input) *Call {
	now := time.Now()
	return &Call{r: r, op: Op{Input: in, Call: now.Sub(r.start), Wall: now}}
}

// End records the response. An Output with Unknown set is recorded with an
// Infinite return time.
func (c *Call) End(out Output) {
	c.op.Output = out
	c.op.Return = time.Since(c.r.start)
	if out.Unknown {
		c.op.Return = Infinite
	}
	c.r.mu.Lock()
	c.r.ops = append(c.r.ops, c.op)
	c.r.mu.Unlock()
}

// Ops returns a copy of the operations recorded so far, in the order they
// ended.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Len returns how many operations have been recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// String describes op in one line, as reports show it.
func (op *Op) String() string {
	ret := "?"
	if op.Return != Infinite {
		ret = fmtDur(op.Return)
	}
	return fmt.Sprintf("[%s, %s] c%d %s", fmtDur(op.Call), ret, op.Client, describe(op.Input, op.Output))
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.3fms", float64(d)/1e6) }

// describe renders an operation for reports and the visualisation.
func describe(in Input, out Output) string {
	var b strings.Builder
	b.WriteString(in.Kind.String())
	switch in.Kind {
	case AcquireTry, AcquireWait:
		fmt.Fprintf(&b, "(%s %s", in.Holder, in.Mode)
		if in.Kind == AcquireWait {
			fmt.Fprintf(&b, " wait=%v", in.Wait)
		}
		if in.Limit > 0 {
			fmt.Fprintf(&b, " limit=%d", in.Limit)
		}
		if in.Group > 0 {
			fmt.Fprintf(&b, " 1/%d", in.Group)
		}
		if in.IdemKey != "" {
			fmt.Fprintf(&b, " idem=%q", in.IdemKey)
		}
		b.WriteString(")")
	case AcquireManyTry, AcquireManyWait:
		fmt.Fprintf(&b, "(%s", in.Holder)
		for _, l := range in.Locks {
			fmt.Fprintf(&b, " %s:%s", l.Name, l.Mode)
			if l.Limit > 0 {
				fmt.Fprintf(&b, "/%d", l.Limit)
			}
		}
		if in.Kind == AcquireManyWait {
			fmt.Fprintf(&b, " wait=%v", in.Wait)
		}
		fmt.Fprintf(&b, " idem=%s)", in.IdemKey)
	case Renew, Release:
		fmt.Fprintf(&b, "(%s)", short(in.LeaseID))
	}
	b.WriteString(" -> ")
	switch {
	case out.Unknown:
		b.WriteString("unknown")
		if out.Err != "" {
			fmt.Fprintf(&b, " (%s)", out.Err)
		}
	case out.Code != "":
		b.WriteString(out.Code)
		if out.Reason != "" {
			fmt.Fprintf(&b, "(%s)", out.Reason)
		}
		if out.Blocker != "" {
			fmt.Fprintf(&b, " on %s", out.Blocker)
		}
	case in.Kind.many():
		b.WriteString("ok")
		for _, g := range out.Leases {
			fmt.Fprintf(&b, " %s t%d", short(g.Lease), g.Token)
		}
		if out.Replayed {
			b.WriteString(" replayed")
		}
	case in.Kind == Inspect || in.Kind == ForceRelease:
		if in.Kind == Inspect {
			fmt.Fprintf(&b, "last=%d ", out.LastToken)
		}
		b.WriteString("[")
		for i, h := range out.Holders {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%s:%s:t%d", h.Holder, h.Mode, h.Token)
		}
		b.WriteString("]")
	default:
		fmt.Fprintf(&b, "ok %s t%d", short(out.Lease), out.Token)
		if out.Replayed {
			b.WriteString(" replayed")
		}
	}
	return b.String()
}

// String describes the answer alone, for test messages.
func (out Output) String() string {
	switch {
	case out.Unknown:
		return "unknown (" + out.Err + ")"
	case out.Code != "" && out.Reason != "":
		return out.Code + "(" + out.Reason + ")"
	case out.Code != "":
		return out.Code
	case out.Lease != "":
		return fmt.Sprintf("ok %s t%d", short(out.Lease), out.Token)
	}
	return fmt.Sprintf("ok last=%d holders=%s", out.LastToken, fmtHolders(out.Holders))
}

// short abbreviates a lease ID for reports: IDs are long and random, their
// tail tells them apart.
func short(id string) string {
	if len(id) > 8 {
		return "…" + id[len(id)-6:]
	}
	return id
}
