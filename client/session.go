package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// Session timing.
const (
	// sessionPingEvery and sessionPingTimeout: the client pings its
	// session, so that a dead connection is noticed (and release_on_close
	// locks are given up) well before the server's 30 s.
	sessionPingEvery   = 5 * time.Second
	sessionPingTimeout = 5 * time.Second
	// sessionMaxRenew is how many leases one renew message names.
	sessionMaxRenew = 1000
)

// errNoSession says that the server has no /v1/session: the client speaks
// HTTP to it from then on.
var errNoSession = errors.New("server has no session endpoint")

// session is a Client's one WebSocket to /v1/session, opened on first use
// and opened again after it breaks, when the next call needs it. Calls on
// it are answered in completion order, so many run at once on one
// connection.
type session struct {
	c *Client

	mu          sync.Mutex
	conn        *sessConn     // nil: none open
	dialing     chan struct{} // closed when the dial in progress ends
	unsupported bool
	// locks are the Locks whose lease was acquired over the current
	// connection, by lease ID: the targets of its lease_ended pushes.
	locks map[string]*Lock
	// kept are the Locks whose keep-alive the session runs.
	kept    map[*Lock]*keepState
	keeping bool          // the keep-alive goroutine runs
	kick    chan struct{} // kept changed, or a new connection opened
	// redialed is set when a connection opens after an earlier one: the
	// keep-alive then renews every lock at once, to learn of ends it was
	// not told of while no connection was open.
	dialed, redialed bool
	// unclaimed are ends pushed for leases no Lock follows yet: the push
	// may overtake the Lock made from the acquire's reply.
	unclaimed map[string]string
}

func newSession(c *Client) *session {
	return &session{c: c, locks: map[string]*Lock{}, kept: map[*Lock]*keepState{}, kick: make(chan struct{}, 1), unclaimed: map[string]string{}}
}

// sessConn is one connection of a session.
type sessConn struct {
	s       *session
	ws      *websocket.Conn
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan sessReply
	done    chan struct{}
	err     error // why it ended, once done is closed
}

type sessReply struct {
	msg []byte // the whole reply, for its error
	res json.RawMessage
	err error
}

// sessRequest is every request of the session protocol; each op sets its
// own fields.
type sessRequest struct {
	ID             int64    `json:"id"`
	Op             string   `json:"op"`
	Name           string   `json:"name,omitempty"`
	HolderID       string   `json:"holder_id,omitempty"`
	Mode           string   `json:"mode,omitempty"`
	TTLMs          int64    `json:"ttl_ms,omitempty"`
	WaitMs         int64    `json:"wait_ms,omitempty"`
	Scope          string   `json:"scope,omitempty"`
	IdempotencyKey string   `json:"idempotency_key,omitempty"`
	DryRun         bool     `json:"dry_run,omitempty"`
	ReleaseOnClose bool     `json:"release_on_close,omitempty"`
	LeaseID        string   `json:"lease_id,omitempty"`
	LeaseIDs       []string `json:"lease_ids,omitempty"`
	Target         int64    `json:"target,omitempty"`
	Limit          int      `json:"limit,omitempty"`
	LockDelayMs    int64    `json:"lock_delay_ms,omitempty"`
	MaxHoldMs      int64    `json:"max_hold_ms,omitempty"`
	// Locks are the locks of an acquire_many.
	Locks []wire.LockRef `json:"locks,omitempty"`
}

// open returns the open connection, or opens one. It returns errNoSession if
// the server has none.
func (s *session) open(ctx context.Context) (*sessConn, error) {
	for {
		s.mu.Lock()
		switch {
		case s.unsupported:
			s.mu.Unlock()
			return nil, errNoSession
		case s.conn != nil:
			sc := s.conn
			s.mu.Unlock()
			return sc, nil
		case s.dialing != nil:
			wait := s.dialing
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctxErr(ctx, nil)
			}
		}
		s.dialing = make(chan struct{})
		s.mu.Unlock()
		sc, err := s.dial(ctx)
		s.mu.Lock()
		close(s.dialing)
		s.dialing = nil
		if err == nil {
			s.conn = sc
			s.redialed = s.dialed
			s.dialed = true
		} else if errors.Is(err, errNoSession) {
			s.unsupported = true
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		s.poke() // renew the kept locks on the new connection
		return sc, nil
	}
}

func (s *session) dial(ctx context.Context) (*sessConn, error) {
	c := s.c
	dctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(dctx, c.base.String()+"/v1/session", &websocket.DialOptions{
		HTTPClient: c.hc,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.key}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(resp.Body)
			switch resp.StatusCode {
			case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest, http.StatusUpgradeRequired:
				return nil, errNoSession // an older server, or a proxy without WebSockets
			}
			return nil, decodeError(resp.StatusCode, b)
		}
		return nil, &netError{err}
	}
	ws.SetReadLimit(16 << 20) // a renew of 1,000 leases answers ~300 KiB
	sc := &sessConn{s: s, ws: ws, pending: map[int64]chan sessReply{}, done: make(chan struct{})}
	go sc.read()
	go sc.ping()
	return sc, nil
}

// read sorts what arrives into replies and pushes until the connection ends.
func (sc *sessConn) read() {
	var err error
	for {
		var msg []byte
		if _, msg, err = sc.ws.Read(context.Background()); err != nil {
			break
		}
		var m struct {
			ID         *int64          `json:"id"`
			Result     json.RawMessage `json:"result"`
			Error      json.RawMessage `json:"error"`
			LeaseEnded *struct {
				LeaseID string `json:"lease_id"`
				Reason  string `json:"reason"`
			} `json:"lease_ended"`
		}
		if json.Unmarshal(msg, &m) != nil {
			continue
		}
		switch {
		case m.ID != nil:
			sc.mu.Lock()
			ch := sc.pending[*m.ID]
			delete(sc.pending, *m.ID)
			sc.mu.Unlock()
			if ch == nil {
				continue
			}
			r := sessReply{msg: msg, res: m.Result}
			if m.Error != nil {
				r.err = decodeError(0, msg)
			}
			ch <- r
		case m.LeaseEnded != nil:
			sc.s.ended(m.LeaseEnded.LeaseID, m.LeaseEnded.Reason)
		}
	}
	sc.s.broken(sc, closeError(err))
}

// ping pings the server until the connection ends, and closes it when a
// ping goes unanswered.
func (sc *sessConn) ping() {
	t := time.NewTicker(sessionPingEvery)
	defer t.Stop()
	for {
		select {
		case <-sc.done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), sessionPingTimeout)
		err := sc.ws.Ping(ctx)
		cancel()
		if err != nil {
			sc.ws.CloseNow()
			return
		}
	}
}

// broken ends sc: its calls fail with err (transient, so that they are
// retried on a new connection), and its release_on_close locks are lost,
// since the server releases them.
func (s *session) broken(sc *sessConn, err error) {
	sc.ws.CloseNow()
	sc.mu.Lock()
	sc.err = err
	close(sc.done)
	pending := sc.pending
	sc.pending = nil
	sc.mu.Unlock()
	for _, ch := range pending {
		ch <- sessReply{err: err}
	}
	s.mu.Lock()
	if s.conn == sc {
		s.conn = nil
	}
	locks := s.locks
	s.locks = map[string]*Lock{}
	s.mu.Unlock()
	for _, l := range locks {
		if l.releaseOnClose {
			l.markLost(errors.Join(errors.New("session connection lost: its release_on_close lease is released"), err))
		}
	}
}

// ended delivers a lease_ended push.
func (s *session) ended(id, reason string) {
	s.mu.Lock()
	l := s.locks[id]
	delete(s.locks, id)
	if l == nil {
		if len(s.unclaimed) >= 1024 {
			clear(s.unclaimed) // a bound; a lost end is still found by renewal
		}
		s.unclaimed[id] = reason
	}
	s.mu.Unlock()
	if l != nil {
		l.markLost(endedError(reason))
	}
}

func endedError(reason string) error {
	return &dlm.Error{Code: dlm.CodeLeaseEnded, Message: "lease has ended: " + reason, Reason: endReasons[reason]}
}

// follow makes l the target of its lease's pushes on sc.
func (s *session) follow(sc *sessConn, l *Lock) {
	s.mu.Lock()
	reason, ended := s.unclaimed[l.lease.ID]
	delete(s.unclaimed, l.lease.ID)
	if s.conn == sc && !ended {
		s.locks[l.lease.ID] = l
	}
	s.mu.Unlock()
	if ended {
		l.markLost(endedError(reason))
	}
}

// unfollow stops pushes to l.
func (s *session) unfollow(l *Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[l.lease.ID] == l {
		delete(s.locks, l.lease.ID)
	}
	delete(s.kept, l)
	s.poke()
}

// poke wakes the keep-alive to look at its locks again.
func (s *session) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// call sends one request on sc and decodes its result into out. If ctx ends
// first, a queued acquire is cancelled on the server, and a lease granted
// to it all the same is released.
func (sc *sessConn) call(ctx context.Context, r sessRequest, out any) error {
	ch := make(chan sessReply, 1)
	sc.mu.Lock()
	if sc.pending == nil {
		err := sc.err
		sc.mu.Unlock()
		return err
	}
	sc.nextID++
	r.ID = sc.nextID
	sc.pending[r.ID] = ch
	sc.mu.Unlock()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := sc.ws.Write(ctx, websocket.MessageText, b); err != nil {
		sc.ws.CloseNow() // a write cut short leaves the stream unusable
		if ctx.Err() != nil {
			return ctxErr(ctx, nil)
		}
		return &netError{err}
	}
	select {
	case rep := <-ch:
		if rep.err != nil {
			return rep.err
		}
		if out != nil {
			if err := json.Unmarshal(rep.res, out); err != nil {
				return &dlm.Error{Code: dlm.CodeInternal, Message: "decode reply: " + err.Error()}
			}
		}
		return nil
	case <-ctx.Done():
		if r.Op == "acquire" {
			go sc.withdraw(r.ID, ch)
		}
		return ctxErr(ctx, nil)
	}
}

// withdraw cancels the queued acquire id, and releases the lease if it was
// granted before the cancel arrived: nobody is left to hold it.
func (sc *sessConn) withdraw(id int64, ch chan sessReply) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	_ = sc.call(ctx, sessRequest{Op: "cancel", Target: id}, nil)
	select {
	case rep := <-ch:
		var w wire.Lease
		if rep.err == nil && json.Unmarshal(rep.res, &w) == nil && w.LeaseID != "" {
			_ = sc.call(ctx, sessRequest{Op: "release", LeaseID: w.LeaseID}, nil)
		}
	case <-ctx.Done():
	}
}

// close closes the session's connection; its calls in flight fail, and
// the next call that needs a session opens another.
func (s *session) close() {
	s.mu.Lock()
	sc := s.conn
	s.mu.Unlock()
	if sc != nil {
		sc.ws.Close(websocket.StatusNormalClosure, "")
	}
}

// useSession reports whether a call should go over the session: always for
// locks that it keeps alive (want), and for other calls while a connection
// is open anyway. One-shot calls of a client that holds no lock stay on
// plain HTTP, which costs no handshake.
func (s *session) use(want bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.unsupported && (want || s.conn != nil)
}

// sessionDo sends r over the session (retrying on a new connection as c.do does
// over HTTP), or over HTTP when the server has no session endpoint.
//
// out receives the result of either; renew, whose answers differ in shape,
// passes the session's in sessOut.
func (c *Client) sessionDo(ctx context.Context, r sessRequest, httpReq request, out any, want bool, sessOut ...any) (viaSession *sessConn, err error) {
	if c.sess == nil || !c.sess.use(want) {
		return nil, c.httpDo(ctx, r, httpReq, out)
	}
	var giveUp time.Time
	var last error
	for attempt := 0; ; attempt++ {
		sc, err := c.sess.open(ctx)
		if errors.Is(err, errNoSession) {
			return nil, c.httpDo(ctx, r, httpReq, out)
		}
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, c.requestTimeout+httpReq.wait)
			so := out
			if len(sessOut) > 0 {
				so = sessOut[0]
			}
			err = sc.call(actx, r, so)
			timedOut := actx.Err() != nil
			cancel()
			if err == nil {
				return sc, nil
			}
			if ctx.Err() == nil && timedOut {
				err = &netError{errors.New("session request timed out")}
			}
		}
		if ctx.Err() != nil {
			return nil, ctxErr(ctx, last)
		}
		if attempt > 0 && httpReq.doneOnRetry != nil && httpReq.doneOnRetry(err) {
			return sc, nil
		}
		if httpReq.once || !transient(err) {
			return nil, err
		}
		if last == nil {
			giveUp = time.Now().Add(c.retryTimeout)
		}
		last = err
		d := backoff(attempt, 50*time.Millisecond, 2*time.Second)
		if time.Now().Add(d).After(giveUp) {
			return nil, err
		}
		if sleep(ctx, d) != nil {
			return nil, ctxErr(ctx, last)
		}
	}
}

// keepState is the session's keep-alive state of one Lock.
type keepState struct {
	retryAt time.Time // after a failed renewal: when to try again
	attempt int
}

// keep registers l with the session's keep-alive, which renews every lock
// it keeps with one renew per round.
func (s *session) keep(l *Lock) {
	s.mu.Lock()
	start := !s.keeping
	s.keeping = true
	s.kept[l] = &keepState{}
	s.mu.Unlock()
	if start {
		go s.keepAlive()
	}
	s.poke()
}

// due returns when l's next renewal is due: a third of the way through its
// lease, as for a Lock of its own, or its retry time after a failure.
func (k *keepState) due(l *Lock) (due time.Time, interval time.Duration) {
	l.mu.Lock()
	deadline, ttl := l.deadline, l.ttl
	l.mu.Unlock()
	due = deadline.Add(-2 * ttl / 3)
	if !k.retryAt.IsZero() {
		due = k.retryAt
	}
	return due, ttl / 3
}

// keepAlive renews the kept locks until there are none. Each round renews
// every lock due within half its interval, so locks renewed together stay
// together and a client holding many locks sends one renew per interval.
func (s *session) keepAlive() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	renewAll := false
	for {
		s.mu.Lock()
		now := time.Now()
		var batch []*Lock
		var next time.Time
		for l, k := range s.kept {
			if l.kctx.Err() != nil || l.atMaxHold() {
				delete(s.kept, l)
				continue
			}
			due, interval := k.due(l)
			if renewAll || due.Sub(now) <= interval/2 {
				batch = append(batch, l)
			} else if next.IsZero() || due.Before(next) {
				next = due
			}
		}
		renewAll = false
		if len(s.kept) == 0 {
			s.keeping = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if len(batch) > 0 {
			s.renewBatch(batch)
			continue
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-timer.C:
		case <-s.kick:
			s.mu.Lock()
			renewAll, s.redialed = s.redialed, false
			s.mu.Unlock()
			timer.Stop()
		}
	}
}

// renewBatch renews locks in renew messages of up to sessionMaxRenew each.
func (s *session) renewBatch(locks []*Lock) {
	for len(locks) > 0 {
		n := min(len(locks), sessionMaxRenew)
		s.renewSome(locks[:n])
		locks = locks[n:]
	}
}

func (s *session) renewSome(locks []*Lock) {
	ids := make([]string, len(locks))
	lostAt := time.Time{}
	for i, l := range locks {
		ids[i] = l.lease.ID
		l.mu.Lock()
		if t := l.deadline.Add(-margin(l.ttl)); lostAt.IsZero() || t.Before(lostAt) {
			lostAt = t
		}
		l.mu.Unlock()
	}
	ctx, cancel := context.WithDeadline(context.Background(), lostAt)
	defer cancel()
	var out struct {
		Leases []struct {
			wire.Lease
			Error json.RawMessage `json:"error"`
		} `json:"leases"`
	}
	sent := time.Now()
	_, err := s.c.sessionDo(ctx, sessRequest{Op: "renew", LeaseIDs: ids}, request{once: true}, nil, true, &out)
	if err == nil && len(out.Leases) != len(locks) {
		err = &dlm.Error{Code: dlm.CodeInternal, Message: "renew answered the wrong number of leases"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range locks {
		k := s.kept[l]
		if k == nil {
			continue
		}
		var lerr error = err
		if err == nil && out.Leases[i].Error != nil {
			lerr = decodeError(0, []byte(`{"error":`+string(out.Leases[i].Error)+`}`))
		}
		switch {
		case lerr == nil:
			lease := leaseOf(&out.Leases[i].Lease)
			k.retryAt, k.attempt = time.Time{}, 0
			l.confirmed(&lease, sent)
		case final(lerr):
			delete(s.kept, l)
			l.markLost(lerr)
		default:
			l.mu.Lock()
			l.renewErr = lerr
			ttl := l.ttl
			l.mu.Unlock()
			k.retryAt = time.Now().Add(backoff(k.attempt, 25*time.Millisecond, min(ttl/6, time.Second)))
			k.attempt++
		}
	}
}

// httpDo is the HTTP fallback of sessionDo. release_on_close has no HTTP
// form: such an acquire fails rather than take a lease that outlives the
// client.
func (c *Client) httpDo(ctx context.Context, r sessRequest, httpReq request, out any) error {
	if r.ReleaseOnClose {
		return dlm.Errorf(dlm.CodeUnavailable, "release_on_close needs a session, which this client or server does not speak")
	}
	return c.do(ctx, httpReq, out)
}
