package linearize

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/dlmhq/dlm"
)

// Options tune Check.
type Options struct {
	// Timeout bounds the search for each lock's history. A history that
	// is not decided in time is reported as a violation: an unchecked run
	// proves nothing. Default 1 minute.
	Timeout time.Duration
	// Artifacts is where the HTML visualisation of a failing history is
	// written. Default $DLM_ARTIFACTS, else the module root (found by
	// walking up to go.mod), else the current directory.
	Artifacts string
	// Label names the run in file names and reports.
	Label string
}

// Result is the outcome of Check.
type Result struct {
	Ops     int // operations checked
	Locks   int // lock histories checked
	Unknown int // operations with an unknown outcome among them
	// Violations describe each failure readably; empty if the history is
	// linearizable and every token check passed.
	Violations []string
	// Visualizations are the HTML files written for failing locks.
	Visualizations []string
}

// OK reports whether the history passed.
func (r *Result) OK() bool { return len(r.Violations) == 0 }

// Check checks ops: the history of each lock must be linearizable with
// respect to the model, and fencing tokens must never repeat or go down in
// real time (checked separately too, since that check scales to any
// history and names the two grants at fault).
func Check(ops []Op, opts Options) Result {
	if opts.Timeout == 0 {
		opts.Timeout = time.Minute
	}
	var res Result
	byName := map[string][]Op{}
	var names []string
	tried := map[string]bool{} // idempotency keys of multi-lock acquires so far
	for _, whole := range ops {
		// An unanswered read or renew changes nothing the model sees, and
		// a request that was never sent changes nothing at all.
		if whole.Unknown && (whole.Kind == Inspect || whole.Kind == Renew || whole.NotSent) {
			continue
		}
		for _, op := range split(whole, tried) {
			if _, ok := byName[op.Name]; !ok {
				names = append(names, op.Name)
			}
			byName[op.Name] = append(byName[op.Name], op)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		part := byName[name]
		res.Locks++
		res.Ops += len(part)
		for _, op := range part {
			if op.Unknown {
				res.Unknown++
			}
		}
		res.Violations = append(res.Violations, checkTokens(name, part)...)
		v, viz := checkLinearizable(name, part, opts)
		if v != "" {
			res.Violations = append(res.Violations, v)
		}
		if viz != "" {
			res.Visualizations = append(res.Visualizations, viz)
		}
	}
	return res
}

// split returns op as the operations of each lock's history: itself, or for
// a multi-lock acquire one acquire per lock, each with the key its lease
// has on the server (the call's key, "\x1f", the lock's index). A part of
// an acquire whose key was tried before (a retry) counts as a replay for
// the token order: the retry may answer a lease an earlier try was granted.
// Whether the parts were granted at one moment is not checked: each lock's
// history is checked on its own.
func split(op Op, tried map[string]bool) []Op {
	if !op.Kind.many() {
		return []Op{op}
	}
	retry := tried[op.IdemKey]
	tried[op.IdemKey] = true
	parts := make([]Op, len(op.Locks))
	for i, l := range op.Locks {
		p := op
		p.Kind = AcquireTry
		if op.Kind == AcquireManyWait {
			p.Kind = AcquireWait
		}
		p.Name, p.Mode, p.Limit, p.Locks, p.Group = l.Name, l.Mode, l.Limit, nil, len(op.Locks)
		p.IdemKey = op.IdemKey + "\x1f" + strconv.Itoa(i)
		p.Leases = nil
		if i < len(op.Leases) {
			p.Lease, p.Token = op.Leases[i].Lease, op.Leases[i].Token
		}
		p.Replayed = op.Replayed || retry && p.Code == ""
		parts[i] = p
	}
	return parts
}

// checkTokens checks guarantee 2 on the answers alone: one token per lease, no
// token for two leases, and a grant answered before another was asked has
// the lower token.
func checkTokens(name string, ops []Op) []string {
	var out []string
	type grant struct {
		op    *Op
		token int64
	}
	var grants []grant
	byToken := map[int64]string{}
	byLease := map[string]int64{}
	for i := range ops {
		op := &ops[i]
		if op.Unknown || op.Code != "" || op.Token == 0 || op.Lease == "" {
			continue
		}
		if id, ok := byToken[op.Token]; ok && id != op.Lease {
			out = append(out, fmt.Sprintf("lock %s: token %d given to two leases, %s and %s (%s)", name, op.Token, short(id), short(op.Lease), op))
		}
		byToken[op.Token] = op.Lease
		if t, ok := byLease[op.Lease]; ok && t != op.Token {
			out = append(out, fmt.Sprintf("lock %s: lease %s answered with tokens %d and %d (%s)", name, short(op.Lease), t, op.Token, op))
		}
		byLease[op.Lease] = op.Token
		if (op.Kind == AcquireTry || op.Kind == AcquireWait) && !op.Replayed {
			grants = append(grants, grant{op, op.Token})
		}
	}
	// Each grant against the grants answered before it was asked: sorted
	// by return, the highest token answered before op's call is enough.
	byReturn := slices.Clone(grants)
	slices.SortFunc(byReturn, func(a, b grant) int { return cmpDur(a.op.Return, b.op.Return) })
	byCall := slices.Clone(grants)
	slices.SortFunc(byCall, func(a, b grant) int { return cmpDur(a.op.Call, b.op.Call) })
	var best *grant
	j := 0
	for i := range byCall {
		g := &byCall[i]
		for j < len(byReturn) && byReturn[j].op.Return < g.op.Call {
			if best == nil || byReturn[j].token > best.token {
				best = &byReturn[j]
			}
			j++
		}
		if best != nil && g.token <= best.token {
			out = append(out, fmt.Sprintf("lock %s: token went down: %d was granted after %d had been answered\n  earlier: %s\n  later:   %s", name, g.token, best.token, best.op, g.op))
		}
	}
	// Inspect's last token never goes down in real time either.
	var inspects []*Op
	for i := range ops {
		if ops[i].Kind == Inspect && !ops[i].Unknown && ops[i].Code == "" {
			inspects = append(inspects, &ops[i])
		}
	}
	for _, a := range inspects {
		for _, b := range inspects {
			if a.Return < b.Call && b.LastToken < a.LastToken {
				out = append(out, fmt.Sprintf("lock %s: last token went down from %d to %d\n  earlier: %s\n  later:   %s", name, a.LastToken, b.LastToken, a, b))
			}
		}
	}
	return out
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkLinearizable runs porcupine on one lock's history and, on failure,
// explains the longest order it found and writes the visualisation.
func checkLinearizable(name string, ops []Op, opts Options) (violation, viz string) {
	m := model{}
	var end time.Duration
	for _, op := range ops {
		if op.Kind == AcquireWait {
			m.queue = true
			m.parked = m.parked || op.Group > 0
		}
		if op.Return != Infinite {
			end = max(end, op.Return)
		}
	}
	hist := make([]porcupine.Operation, len(ops))
	for i, op := range ops {
		ret := op.Return
		if ret == Infinite {
			// It may take effect at any moment after its call: after
			// everything that was answered is as late as it matters.
			ret = end + 1
		}
		hist[i] = porcupine.Operation{ClientId: op.Client, Input: op.Input, Call: int64(op.Call), Output: op.Output, Return: int64(ret)}
	}
	pm := m.porcupine()
	res, info := porcupine.CheckOperationsVerbose(pm, hist, opts.Timeout)
	switch res {
	case porcupine.Ok:
		return "", ""
	case porcupine.Unknown:
		return fmt.Sprintf("lock %s: %d operations not decided within %v: make the run smaller", name, len(ops), opts.Timeout), ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "lock %s: history of %d operations is not linearizable\n", name, len(ops))
	explain(&b, m, ops, info)
	path := artifactPath(opts, name)
	if err := porcupine.VisualizePath(pm, info, path); err != nil {
		fmt.Fprintf(&b, "(writing the visualisation failed: %v)\n", err)
		path = ""
	} else {
		fmt.Fprintf(&b, "visualisation: %s\n", path)
	}
	return b.String(), path
}

// explain prints the longest linearizable order porcupine found, the model
// states it leads to, and why each operation that could come next cannot.
func explain(b *strings.Builder, m model, ops []Op, info porcupine.LinearizationInfo) {
	partials := info.PartialLinearizations()
	var longest []int
	if len(partials) > 0 {
		for _, p := range partials[0] {
			if len(p) > len(longest) {
				longest = p
			}
		}
	}
	states := []state{{}}
	placed := map[int]bool{}
	const tail = 12
	if len(longest) > tail {
		fmt.Fprintf(b, "longest linearizable order (%d of %d operations), last %d:\n", len(longest), len(ops), tail)
	} else {
		fmt.Fprintf(b, "longest linearizable order (%d of %d operations):\n", len(longest), len(ops))
	}
	for k, i := range longest {
		placed[i] = true
		var next []state
		for _, s := range states {
			n, _ := m.step(s, ops[i].Input, ops[i].Output)
			next = append(next, n...)
		}
		states = dedupe(next)
		if k >= len(longest)-tail {
			fmt.Fprintf(b, "  %s\n      => %s\n", &ops[i], describeStates(states))
		}
	}
	// The candidates: operations not placed whose call comes before every
	// unplaced operation's return (those are the ones that could go next).
	minRet := Infinite
	for i := range ops {
		if !placed[i] && ops[i].Return < minRet {
			minRet = ops[i].Return
		}
	}
	fmt.Fprintf(b, "none of these can come next:\n")
	n := 0
	for i := range ops {
		if placed[i] || ops[i].Call > minRet {
			continue
		}
		why := ""
		for _, s := range states {
			if _, w := m.step(s, ops[i].Input, ops[i].Output); w != "" {
				why = w
				break
			}
		}
		fmt.Fprintf(b, "  %s\n      because %s\n", &ops[i], why)
		if n++; n == 10 {
			break
		}
	}
}

func dedupe(ss []state) []state {
	var out []state
	for _, s := range ss {
		if !slices.ContainsFunc(out, s.equal) {
			out = append(out, s)
		}
	}
	return out
}

func describeStates(ss []state) string {
	if len(ss) == 1 {
		return ss[0].String()
	}
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return "one of {" + strings.Join(parts, ", ") + "}"
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// artifactPath is where the visualisation of lock name goes. The root
// .gitignore ignores /porcupine-*.html.
func artifactPath(opts Options, name string) string {
	dir := opts.Artifacts
	if dir == "" {
		dir = os.Getenv("DLM_ARTIFACTS")
	}
	if dir == "" {
		dir = moduleRoot()
	}
	label := opts.Label
	if label == "" {
		label = "run"
	}
	file := fmt.Sprintf("porcupine-%s-%s-%d.html", unsafeChars.ReplaceAllString(label, "_"), unsafeChars.ReplaceAllString(name, "_"), time.Now().UnixNano())
	return filepath.Join(dir, file)
}

func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// Summary is a one-line account of r for logs and RELIABILITY.md.
func (r *Result) Summary() string {
	return fmt.Sprintf("%d operations on %d locks checked (%d with unknown outcome), %d violations", r.Ops, r.Locks, r.Unknown, len(r.Violations))
}

// ErrorCode is the code an error answers with, "" for nil; for Outputs.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	return dlm.ErrorCode(err)
}
