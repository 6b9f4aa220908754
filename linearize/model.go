package linearize

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"

	"github.com/dlmhq/dlm"
)

// lease is a holder in the model. id is "" for a grant whose answer was lost
// (an unknown outcome) until a replay of its idempotency key reveals it,
// and token is 0 until an answer shows it.
type lease struct {
	id     string
	token  int64
	mode   dlm.Mode
	holder string
	idem   string
	limit  int // the semaphore limit it was granted with, 0 for none
}

// state is the model of one lock: the last fencing token issued and the
// holders, in token order. States are values: steps copy before changing.
//
// vague says that last is only a lower bound: a grant whose answer was lost
// took a token the model cannot know (above last, and perhaps above the
// time floor too), until an inspect shows it.
type state struct {
	last    int64
	vague   bool
	holders []lease
}

// with adds a holder; a token of 0 is one the model does not know.
func (s state) with(l lease) state {
	h := make([]lease, 0, len(s.holders)+1)
	h = append(h, s.holders...)
	h = append(h, l)
	if l.token == 0 {
		return state{last: s.last + 1, vague: true, holders: h}
	}
	return state{last: max(s.last, l.token), holders: h}
}

func (s state) without(i int) state {
	h := make([]lease, 0, len(s.holders))
	h = append(h, s.holders[:i]...)
	h = append(h, s.holders[i+1:]...)
	return state{last: s.last, vague: s.vague, holders: h}
}

func (s state) replace(i int, l lease) state {
	h := slices.Clone(s.holders)
	h[i] = l
	return state{last: s.last, vague: s.vague, holders: h}
}

func (s state) find(id string) int {
	for i, h := range s.holders {
		if h.id == id && id != "" {
			return i
		}
	}
	return -1
}

func (s state) findIdem(in Input) int {
	if in.IdemKey == "" {
		return -1
	}
	for i, h := range s.holders {
		// One tenant per history: the key is the tenant's.
		if h.idem == in.IdemKey {
			return i
		}
	}
	return -1
}

// compatible reports whether a grant in mode m may join the holders: every
// holder is compatible with it, and a semaphore has a permit left.
func (s state) compatible(m dlm.Mode) bool {
	for _, h := range s.holders {
		if !dlm.Compatible(m, h.mode) {
			return false
		}
	}
	return len(s.holders) == 0 || s.holders[0].limit == 0 || len(s.holders) < s.holders[0].limit
}

// mismatched reports whether an acquire with limit is refused: every
// holder (and waiter) of a lock has the same limit, and a lock with
// waiters has holders (or a parked multi-lock acquire, which has the
// holders' limit too).
func (s state) mismatched(limit int) bool {
	return len(s.holders) > 0 && s.holders[0].limit != limit
}

func (s state) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "last=%d", s.last)
	if s.vague {
		b.WriteString("+")
	}
	b.WriteString(" holders=[")
	for i, h := range s.holders {
		if i > 0 {
			b.WriteString(" ")
		}
		id := short(h.id)
		if id == "" {
			id = "?"
		}
		fmt.Fprintf(&b, "%s:%s:%s:t%d", h.holder, h.mode, id, h.token)
	}
	b.WriteString("]")
	return b.String()
}

// model is the sequential specification of one lock.
//
// queue says whether blocking acquires appear in the history. The model has
// no queue (a waiter's enqueue is invisible to clients), so when there may
// be one, a shared request may find the lock taken although every holder is
// shared: an exclusive waiter is ahead of it (guarantee 4). Conflicts are
// otherwise exact: a request conflicts if and only if a holder is
// incompatible with it. Committed state never has waiters without holders,
// since a grant to the queue head happens in the transaction that frees it.
//
// The model requires each grant's token to be exactly one above the last,
// or a jump to the token floor of a newly started server process (a
// multiple of 2^20, see dlm.TokenFloor): stricter than "strictly greater",
// and true of the one core every backend shares (LockState.grant). After a
// grant whose answer was lost may have jumped, it knows only a lower bound,
// until an answer shows the token.
//
// A multi-lock acquire is checked in each lock's history as one acquire
// (Input.Group set): granted there with its lease, or refused with nothing
// changed. Its refusal must be explained by this lock only if it names it
// (Output.Blocker). A waiting one may park on a free lock while another of
// its locks is taken (parked): a request may then find a lock taken that
// has no holders.
type model struct{ queue, parked bool }

// step returns the states s can move to by in answered with out, and why
// there are none.
func (m model) step(s state, in Input, out Output) ([]state, string) {
	if out.Unknown {
		return m.stepUnknown(s, in), ""
	}
	switch in.Kind {
	case AcquireTry, AcquireWait:
		return m.stepAcquire(s, in, out)
	case Renew, Release:
		i := s.find(in.LeaseID)
		switch out.Code {
		case "":
			if i < 0 {
				return nil, fmt.Sprintf("%s of %s succeeded but it holds nothing", in.Kind, short(in.LeaseID))
			}
			if t := s.holders[i].token; t != 0 && t != out.Token {
				return nil, fmt.Sprintf("%s answered token %d, the lease has %d", in.Kind, out.Token, s.holders[i].token)
			}
			if in.Kind == Release {
				return []state{s.without(i)}, ""
			}
			return []state{s}, ""
		case dlm.CodeLeaseEnded:
			if i >= 0 {
				return nil, fmt.Sprintf("%s of %s answered lease_ended but it holds t%d", in.Kind, short(in.LeaseID), s.holders[i].token)
			}
			return []state{s}, ""
		}
		return nil, fmt.Sprintf("%s answered %s", in.Kind, out.Code)
	case Inspect:
		if out.Code != "" {
			return nil, "inspect answered " + out.Code
		}
		if out.LastToken != s.last && (!s.vague || out.LastToken < s.last) {
			return nil, fmt.Sprintf("inspect shows last token %d, the model %v", out.LastToken, s)
		}
		if !sameHolders(s.holders, out.Holders) {
			return nil, fmt.Sprintf("inspect shows holders %s, the model %v", fmtHolders(out.Holders), s)
		}
		return []state{s.shown(out)}, ""
	case ForceRelease:
		if out.Code != "" {
			return nil, "force-release answered " + out.Code
		}
		if !sameHolders(s.holders, out.Holders) {
			return nil, fmt.Sprintf("force-release ended %s, the model holds %v", fmtHolders(out.Holders), s)
		}
		return []state{{last: s.last, vague: s.vague}}, ""
	}
	return nil, "unknown operation"
}

// lostGrant returns the states a grant whose answer was lost may have left,
// with l added: its token is one above the last, or, if a newly started
// process made it, that process's floor (a later multiple of 2^20), which
// the model keeps as a lower bound. Told apart, the two keep the model
// exact in the common case: a later answer shows how many lost grants
// happened.
func (s state) lostGrant(l lease) []state {
	if s.vague {
		return []state{s.with(l)} // a lower bound already: one above it
	}
	exact := l
	exact.token = s.last + 1
	jumped := s
	jumped.last = (s.last>>20+1)<<20 - 1 // with makes it the next floor
	return []state{s.with(exact), jumped.with(l)}
}

// shown returns s with what an inspect's answer reveals: the last token and
// the tokens of holders whose grant answer was lost.
func (s state) shown(out Output) state {
	hs := slices.Clone(out.Holders)
	slices.SortFunc(hs, func(a, b Holder) int { return int(a.Token - b.Token) })
	h := slices.Clone(s.holders)
	for i := range h {
		h[i].token = hs[i].Token
	}
	return state{last: out.LastToken, holders: h}
}

func fmtHolders(hs []Holder) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = fmt.Sprintf("%s:%s:t%d", h.Holder, h.Mode, h.Token)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func sameHolders(ls []lease, hs []Holder) bool {
	if len(ls) != len(hs) {
		return false
	}
	hs = slices.Clone(hs)
	slices.SortFunc(hs, func(a, b Holder) int { return int(a.Token - b.Token) })
	for i := range ls {
		if (ls[i].token != 0 && ls[i].token != hs[i].Token) || ls[i].mode != hs[i].Mode || ls[i].holder != hs[i].Holder {
			return false
		}
	}
	return true
}

func (m model) stepAcquire(s state, in Input, out Output) ([]state, string) {
	if i := s.findIdem(in); i >= 0 {
		// A live lease has this key: the acquire must replay it.
		h := s.holders[i]
		if out.Code != "" && in.Group > 0 {
			return []state{s}, "" // another of its locks refused the retry
		}
		if out.Code != "" {
			return nil, fmt.Sprintf("acquire with key %s answered %s while its lease t%d is held", in.IdemKey, out.Code, h.token)
		}
		if (h.token != 0 && out.Token != h.token) || (h.id != "" && h.id != out.Lease) {
			return nil, fmt.Sprintf("replay of key %s answered %s t%d, the lease is %s t%d", in.IdemKey, short(out.Lease), out.Token, short(h.id), h.token)
		}
		// A multi-lock retry is marked replayed only if every lease was.
		if !out.Replayed && in.Group == 0 {
			return nil, fmt.Sprintf("replay of key %s not marked replayed", in.IdemKey)
		}
		if h.id == "" || h.token == 0 {
			h.id, h.token = out.Lease, out.Token
			return []state{s.replace(i, h)}, ""
		}
		return []state{s}, ""
	}
	mismatched := s.mismatched(in.Limit)
	blocked := !s.compatible(in.Mode) || (m.queue && len(s.holders) > 0) || m.parked
	elsewhere := in.Group > 0 && out.Blocker != in.Name // another lock refused it
	switch out.Code {
	case "":
		if mismatched {
			return nil, fmt.Sprintf("granted limit %d while %v", in.Limit, s)
		}
		if !s.compatible(in.Mode) {
			return nil, fmt.Sprintf("granted %s while %v", in.Mode, s)
		}
		want := s.last + 1
		jump := out.Token > want && out.Token%(1<<20) == 0 // a new process's floor
		if out.Token != want && !jump && (!s.vague || out.Token < want) {
			return nil, fmt.Sprintf("granted token %d, want %d", out.Token, want)
		}
		if out.Replayed && in.Kind == AcquireTry && in.Group == 0 {
			return nil, "a new grant marked replayed"
		}
		if s.find(out.Lease) >= 0 {
			return nil, "granted a lease ID that is held already"
		}
		return []state{s.with(lease{out.Lease, out.Token, in.Mode, in.Holder, in.IdemKey, in.Limit})}, ""
	case dlm.CodeLockConflict, dlm.CodeWaitTimeout:
		if (out.Code == dlm.CodeLockConflict) != (in.Kind == AcquireTry) {
			return nil, fmt.Sprintf("%s answered %s", in.Kind, out.Code)
		}
		if mismatched && in.Group == 0 {
			return nil, fmt.Sprintf("limit %d answered %s while %v, want invalid_argument", in.Limit, out.Code, s)
		}
		if !blocked && !elsewhere {
			return nil, fmt.Sprintf("%s answered %s while %v", in.Mode, out.Code, s)
		}
		return []state{s}, ""
	case dlm.CodeInvalidArgument:
		// A multi-lock acquire's refusal does not say which lock's limit
		// differs.
		if !mismatched && in.Group == 0 && !m.parked { // a parked entry has a limit too
			return nil, fmt.Sprintf("limit %d refused while %v", in.Limit, s)
		}
		return []state{s}, ""
	}
	return nil, fmt.Sprintf("%s answered %s", in.Kind, out.Code)
}

// stepUnknown returns every state an operation without an answer may have
// left.
func (m model) stepUnknown(s state, in Input) []state {
	next := []state{s} // it did not happen (or changed nothing)
	switch in.Kind {
	case AcquireTry, AcquireWait:
		if s.findIdem(in) >= 0 || !s.compatible(in.Mode) || s.mismatched(in.Limit) {
			break
		}
		granted := s.lostGrant(lease{"", 0, in.Mode, in.Holder, in.IdemKey, in.Limit})
		next = append(next, granted...)
		if in.Kind == AcquireWait && in.IdemKey == "" {
			// Granted after its client left: the server gives it back.
			for _, g := range granted {
				next = append(next, state{last: g.last, vague: g.vague, holders: s.holders})
			}
		}
	case Release:
		if i := s.find(in.LeaseID); i >= 0 {
			next = append(next, s.without(i))
		}
	case ForceRelease:
		if len(s.holders) > 0 {
			next = append(next, state{last: s.last, vague: s.vague})
		}
	}
	return next
}

func (s state) equal(o state) bool {
	return s.last == o.last && s.vague == o.vague && slices.Equal(s.holders, o.holders)
}

func (s state) hash() uint64 {
	h := fnv.New64a()
	fmt.Fprint(h, s.last, s.vague)
	for _, l := range s.holders {
		fmt.Fprint(h, l.token, l.id)
	}
	return h.Sum64()
}

// porcupine returns the model in porcupine's terms. Inputs and outputs are
// Input and Output values.
func (m model) porcupine() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Init: func() []any { return []any{state{}} },
		Step: func(st, in, out any) []any {
			next, _ := m.step(st.(state), in.(Input), out.(Output))
			res := make([]any, len(next))
			for i := range next {
				res[i] = next[i]
			}
			return res
		},
		Equal:             func(a, b any) bool { return a.(state).equal(b.(state)) },
		Hash:              func(st any) uint64 { return st.(state).hash() },
		DescribeOperation: func(in, out any) string { return describe(in.(Input), out.(Output)) },
		DescribeState:     func(st any) string { return st.(state).String() },
	}
	return nm.ToModel()
}
