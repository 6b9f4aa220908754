package dlmhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/wire"
)

// Session limits.
const (
	// sessionMaxInFlight is how many requests one session may have
	// unanswered; more are answered limit_exceeded.
	sessionMaxInFlight = 1024
	// sessionMaxMessage is the largest message a client may send; a larger
	// one closes the session with 1009.
	sessionMaxMessage = dlm.MaxRequestBody
	// sessionMaxRenew is how many leases one renew may name.
	sessionMaxRenew = 1000
	// sessionRenewParallel is how many renewals of one renew run at once:
	// enough for the store to commit them in a few batches.
	sessionRenewParallel = 64
	// sessionMaxOutbox is how many bytes of replies and pushes may wait
	// for a client that does not read: past it the client is too slow and
	// is closed, as a slow watcher is.
	sessionMaxOutbox = 4 << 20
	// sessionReleaseTimeout bounds the releases of release_on_close leases
	// when a session ends.
	sessionReleaseTimeout = 10 * time.Second
)

// errCancelled is the reply to a queued acquire withdrawn by cancel.
var errCancelled = dlm.Errorf(dlm.CodeCancelled, "withdrawn by cancel")

// session serves GET /v1/session: many lock operations on one WebSocket,
// answered in completion order, with lease_ended and waiting pushed.
func (h *Handler) session(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkOrigin(r); err != nil {
		return err
	}
	base := context.WithoutCancel(r.Context())
	ln, err := h.engine.Listen(r.Context())
	if err != nil {
		return err
	}
	fw := &frameWriter{ResponseWriter: w}
	conn, err := websocket.Accept(fw, r, &websocket.AcceptOptions{Subprotocols: []string{watchSubprotocol}})
	if err != nil {
		ln.Close()
		return nil // Accept has answered the request
	}
	conn.SetReadLimit(sessionMaxMessage)
	ctx, cancel := context.WithCancelCause(base)
	s := &session{
		h: h, conn: conn, fc: fw.conn, tenant: c.principal.Tenant, ln: ln,
		ctx: ctx, cancel: cancel,
		inflight: map[int64]context.CancelCauseFunc{},
		leases:   map[string]*held{}, grants: map[grant]*held{}, byKey: map[dlm.Key]map[*held]struct{}{}, early: map[grant]*dlm.Event{},
	}
	// Revoking the key ends the session: its close frame says why, and
	// the end of the connection withdraws its queued acquires.
	kctx, release := h.engine.KeyContext(ctx, c.principal.KeyID)
	defer release()
	go func() {
		<-kctx.Done()
		if errors.Is(context.Cause(kctx), engine.ErrKeyRevoked) {
			conn.Close(websocket.StatusPolicyViolation, closeReason(engine.ErrKeyRevoked))
		}
	}()
	s.run()
	return nil
}

// session is one connection of GET /v1/session.
type session struct {
	h      *Handler
	conn   *websocket.Conn
	fc     *frameConn
	tenant string
	ln     *engine.Listener
	ctx    context.Context // ends with the connection
	cancel context.CancelCauseFunc
	ops    sync.WaitGroup // requests being served

	mu sync.Mutex
	// inflight are the ids of the requests unanswered, each with the
	// function that cancels it.
	inflight map[int64]context.CancelCauseFunc
	// leases are those acquired over this session and not known to have
	// ended, by lease ID, by grant and by lock.
	leases map[string]*held
	grants map[grant]*held
	byKey  map[dlm.Key]map[*held]struct{}
	// early are ends of grants on followed locks that no lease of the
	// session had yet: an end can overtake the acquire's return.
	early map[grant]*dlm.Event
	// out are the frames ready to be written; spare is the buffer the
	// writer gives back for the next ones.
	out, spare []byte
	// writing is set while a goroutine writes out (see flush); dead once
	// a write failed.
	writing, dead bool
}

// grant names one grant of a lock: the events' name for a lease.
type grant struct {
	key   dlm.Key
	token int64
}

// held is a lease acquired over a session.
type held struct {
	id             string
	grant          grant
	releaseOnClose bool
	// releasing is set while a release sent on this session runs: its
	// end is not pushed. ended holds the end the feed reported meanwhile,
	// to be pushed if that release fails.
	releasing bool
	ended     *dlm.Event
}

// run serves the session until its connection ends, then withdraws its
// queued acquires and releases its release_on_close leases.
func (s *session) run() {
	defer s.ln.Close()
	go s.pushes()
	go ping(s.ctx, s.conn, func() { s.cancel(errors.New("no pong")) })
	// Reads take no context: one that ends them would be registered and
	// unregistered with each message. The end of the session closes the
	// connection instead, which ends the read.
	stop := context.AfterFunc(s.ctx, func() { s.conn.CloseNow() })
	defer stop()
	for {
		typ, msg, err := s.conn.Read(context.Background())
		if err != nil {
			break
		}
		if typ != websocket.MessageText {
			s.reply(0, nil, dlm.Invalid("message", "must be a JSON text message"))
			continue
		}
		s.dispatch(msg)
	}
	s.cancel(errors.New("session closed"))
	s.ops.Wait() // queued acquires leave their queues; raced grants are recorded
	s.conn.CloseNow()
	s.releaseOnClose()
}

// releaseOnClose releases the session's release_on_close leases.
func (s *session) releaseOnClose() {
	ctx, cancel := context.WithTimeout(context.Background(), sessionReleaseTimeout)
	defer cancel()
	var wg sync.WaitGroup
	s.mu.Lock()
	for _, l := range s.leases {
		if l.releaseOnClose {
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				_, err := s.h.engine.Release(ctx, s.tenant, id)
				var de *dlm.Error
				if err != nil && !(errors.As(err, &de) && de.Code == dlm.CodeLeaseEnded) {
					s.h.log.Warn("release_on_close failed", "err", err)
				}
			}(l.id)
		}
	}
	s.mu.Unlock()
	wg.Wait()
}

// Request fields by op, beside id and op.
var sessionFields = map[string][]string{
	"acquire":      append([]string{"id", "op", "name", "release_on_close"}, acquireFields...),
	"acquire_many": append([]string{"id", "op", "release_on_close"}, acquireManyFields...),
	"renew":        {"id", "op", "lease_ids", "ttl_ms"},
	"release":      {"id", "op", "lease_id"},
	"get":          {"id", "op", "lease_id"},
	"inspect":      {"id", "op", "name", "scope"},
	"cancel":       {"id", "op", "target"},
}

// sessionAnyField is every field of any op.
var sessionAnyField = func() []string {
	var all []string
	for _, fs := range sessionFields {
		for _, f := range fs {
			if !slices.Contains(all, f) {
				all = append(all, f)
			}
		}
	}
	return all
}()

// dispatch reads one request and starts serving it. A request that cannot be
// read is answered at once; the session goes on.
func (s *session) dispatch(msg []byte) {
	msg = bytes.TrimSpace(msg)
	if len(msg) == 0 || msg[0] != '{' {
		s.reply(0, nil, dlm.Invalid("message", "must be a JSON object"))
		return
	}
	o, err := decodeObject(msg, sessionAnyField...)
	var de *dlm.Error
	switch {
	case errors.As(err, &de) && de.Field == "body":
		s.reply(0, nil, dlm.Invalid("message", "must be a JSON object: %s", de.Message))
		return
	case err != nil:
		// Valid JSON with a field no op has, or one given twice: answer
		// with its id if it has a readable one.
		var head struct {
			ID int64 `json:"id"`
		}
		json.Unmarshal(msg, &head)
		s.reply(max(head.ID, 0), nil, err)
		return
	}
	var id int64
	if given, err := o.field("id", &id, "an integer"); err != nil || !given || id <= 0 {
		s.reply(0, nil, dlm.Invalid("id", "must be an integer greater than 0"))
		return
	}
	op, _, err := o.string("op")
	if err != nil || sessionFields[op] == nil {
		s.reply(id, nil, dlm.Invalid("op", "must be one of acquire, acquire_many, renew, release, get, inspect, cancel"))
		return
	}
	var unknown []string
	for k := range o {
		if !slices.Contains(sessionFields[op], k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		s.reply(id, nil, dlm.Invalid(unknown[0], "unknown field of %s (allowed: %v)", op, sessionFields[op]))
		return
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	s.mu.Lock()
	switch _, dup := s.inflight[id]; {
	case dup:
		s.mu.Unlock()
		cancel(nil)
		// Its own id would answer the request already in flight.
		s.reply(0, nil, dlm.Invalid("id", "%d is already in flight on this session", id))
		return
	case len(s.inflight) >= sessionMaxInFlight:
		s.mu.Unlock()
		cancel(nil)
		s.reply(id, nil, dlm.Errorf(dlm.CodeLimitExceeded, "at most %d requests in flight per session", sessionMaxInFlight))
		return
	}
	s.inflight[id] = cancel
	s.ops.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.ops.Done()
		result, err := s.serve(ctx, op, o)
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
		cancel(nil)
		s.reply(id, result, err)
	}()
}

// serve runs one request.
func (s *session) serve(ctx context.Context, op string, o object) (any, error) {
	switch op {
	case "acquire":
		return s.acquire(ctx, o)
	case "acquire_many":
		return s.acquireMany(ctx, o)
	case "renew":
		return s.renew(ctx, o)
	case "release":
		return s.release(ctx, o)
	case "get":
		id, err := leaseID(o)
		if err != nil {
			return nil, err
		}
		l, err := s.h.engine.Lease(ctx, s.tenant, id)
		if err != nil {
			return nil, err
		}
		return wire.OwnLease(&l), nil
	case "inspect":
		return s.inspect(ctx, o)
	default: // "cancel"
		return s.cancelOp(o)
	}
}

func (s *session) acquire(ctx context.Context, o object) (any, error) {
	name, given, err := o.string("name")
	if err != nil {
		return nil, err
	} else if !given {
		return nil, dlm.Invalid("name", "is required")
	}
	var req engine.AcquireRequest
	dryRun, err := acquireBody(o, &req, s.tenant, name)
	if err != nil {
		return nil, err
	}
	idem, releaseOnClose, err := sessionAcquireFields(o)
	if err != nil {
		return nil, err
	}
	req.IdempotencyKey = idem
	if dryRun {
		res, err := s.h.engine.DryRun(ctx, req)
		if err != nil {
			return nil, err
		}
		return wireDryRun{WouldGrant: res.WouldGrant, Holders: wire.Holders(res.Holders), Waiters: res.Waiters}, nil
	}
	// Follow the lock before the grant, so that no end of it is missed.
	s.ln.Follow(req.Key)
	l, replayed, err := s.h.engine.Acquire(ctx, req)
	if err != nil {
		s.ln.Unfollow(req.Key)
		return nil, cancelledAs(ctx, err)
	}
	s.hold(&l, releaseOnClose)
	wl := wire.OwnLease(&l)
	wl.Replayed = replayed
	return wl, nil
}

// sessionAcquireFields decodes what the session's acquire ops take beside
// an HTTP acquire body: the idempotency key (a header on HTTP) and
// release_on_close.
func sessionAcquireFields(o object) (idem string, releaseOnClose bool, err error) {
	if key, given, err := o.string("idempotency_key"); err != nil {
		return "", false, err
	} else if given {
		if err := dlm.ValidateIdempotencyKey(key); err != nil {
			return "", false, err
		}
		idem = key
	}
	releaseOnClose, _, err = o.bool("release_on_close")
	return idem, releaseOnClose, err
}

// cancelledAs answers an acquire that failed because the op was cancelled
// (see cancelOp) with errCancelled, and any other failure as it is.
func cancelledAs(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errCancelled) && errors.Is(err, context.Canceled) {
		return errCancelled
	}
	return err
}

// hold records lease l as acquired over the session; the caller followed its
// lock once for it.
func (s *session) hold(l *dlm.Lease, releaseOnClose bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.leases[l.ID]; ok {
		// A replay of a lease the session holds already.
		h.releaseOnClose = h.releaseOnClose || releaseOnClose
		s.ln.Unfollow(l.Key)
		return
	}
	h := &held{id: l.ID, grant: grant{l.Key, l.Token}, releaseOnClose: releaseOnClose}
	if ev := s.early[h.grant]; ev != nil {
		delete(s.early, h.grant)
		s.pushEnded(h, ev)
		s.ln.Unfollow(l.Key)
		return
	}
	s.leases[h.id] = h
	s.grants[h.grant] = h
	if s.byKey[l.Key] == nil {
		s.byKey[l.Key] = map[*held]struct{}{}
	}
	s.byKey[l.Key][h] = struct{}{}
}

// forget removes h, which has ended, from the session; s.mu is held.
func (s *session) forget(h *held) {
	delete(s.leases, h.id)
	delete(s.grants, h.grant)
	delete(s.byKey[h.grant.key], h)
	if len(s.byKey[h.grant.key]) == 0 {
		delete(s.byKey, h.grant.key)
	}
	s.ln.Unfollow(h.grant.key)
}

type wireRenewResult struct {
	Leases []any `json:"leases"`
}

type wireLeaseError struct {
	LeaseID string    `json:"lease_id"`
	Error   wireError `json:"error"`
}

func (s *session) renew(ctx context.Context, o object) (any, error) {
	var ids []string
	if given, err := o.field("lease_ids", &ids, "a list of lease ids"); err != nil {
		return nil, err
	} else if !given || len(ids) == 0 || len(ids) > sessionMaxRenew {
		return nil, dlm.Invalid("lease_ids", "must list 1 to %d lease ids", sessionMaxRenew)
	}
	var ttl time.Duration
	if ms, given, err := o.int("ttl_ms"); err != nil {
		return nil, err
	} else if given {
		if ms == 0 {
			return nil, dlm.Invalid("ttl_ms", "must be at least %d (omit it for the lease's own)", dlm.MinTTLMillis)
		}
		ttl = millis(ms)
	}
	out := wireRenewResult{Leases: make([]any, len(ids))}
	sem := make(chan struct{}, sessionRenewParallel)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			l, err := s.h.engine.Renew(ctx, s.tenant, id, ttl)
			if err != nil {
				out.Leases[i] = wireLeaseError{LeaseID: id, Error: s.wireError(err)}
				return
			}
			out.Leases[i] = wire.OwnLease(&l)
		}()
	}
	wg.Wait()
	return out, nil
}

func (s *session) release(ctx context.Context, o object) (any, error) {
	id, err := leaseID(o)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	h := s.leases[id]
	if h != nil {
		h.releasing = true
	}
	s.mu.Unlock()
	l, err := s.h.engine.Release(ctx, s.tenant, id)
	if h != nil {
		s.mu.Lock()
		h.releasing = false
		switch {
		case s.leases[id] != h:
		case err == nil:
			s.forget(h)
		case h.ended != nil:
			// It ended otherwise while the release ran: say so.
			s.pushEnded(h, h.ended)
			s.forget(h)
		}
		s.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	return wire.OwnLease(&l), nil
}

func (s *session) inspect(ctx context.Context, o object) (any, error) {
	name, given, err := o.string("name")
	if err != nil {
		return nil, err
	} else if !given {
		return nil, dlm.Invalid("name", "is required")
	}
	if err := dlm.ValidateName(name); err != nil {
		return nil, err
	}
	key := dlm.Key{Namespace: s.tenant, Name: name}
	if sc, given, err := o.string("scope"); err != nil {
		return nil, err
	} else if global, err := parseScope(sc, given); err != nil {
		return nil, err
	} else if global {
		key.Namespace = dlm.GlobalNamespace
	}
	v, err := s.h.engine.Inspect(ctx, key)
	if err != nil {
		return nil, err
	}
	return wire.FromLock(&v), nil
}

// cancelOp withdraws the request in flight with id target. Only a queued
// acquire is affected: anything else finishes anyway, within moments.
func (s *session) cancelOp(o object) (any, error) {
	var target int64
	if given, err := o.field("target", &target, "an integer"); err != nil {
		return nil, err
	} else if !given || target <= 0 {
		return nil, dlm.Invalid("target", "must be the id of a request in flight")
	}
	s.mu.Lock()
	cancel, ok := s.inflight[target]
	s.mu.Unlock()
	if !ok {
		return nil, dlm.Errorf(dlm.CodeNotFound, "no request %d in flight", target)
	}
	cancel(errCancelled)
	return struct{}{}, nil
}

func leaseID(o object) (string, error) {
	id, given, err := o.string("lease_id")
	if err != nil {
		return "", err
	} else if !given || id == "" {
		return "", dlm.Invalid("lease_id", "is required")
	}
	return id, nil
}

type wireLeaseEnded struct {
	LeaseID      string    `json:"lease_id"`
	Name         string    `json:"name"`
	Scope        string    `json:"scope"`
	FencingToken int64     `json:"fencing_token"`
	Reason       string    `json:"reason"`
	At           time.Time `json:"at"`
}

type wireWaiting struct {
	LeaseID  string    `json:"lease_id"`
	Name     string    `json:"name"`
	Scope    string    `json:"scope"`
	HolderID string    `json:"holder_id"`
	Mode     string    `json:"mode"`
	At       time.Time `json:"at"`
}

// pushes turns the events of the session's locks into lease_ended and
// waiting pushes until the session ends. A session whose pushes fall too
// far behind is closed, as a slow watcher is.
func (s *session) pushes() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.ln.Done():
			if err := s.ln.Err(); err != nil {
				var de *dlm.Error
				if errors.As(err, &de) && de.Code == dlm.CodeSlowConsumer {
					s.conn.Close(closeSlowConsumer, closeReason(de))
				} else {
					s.conn.Close(websocket.StatusGoingAway, dlm.CodeUnavailable+": server is shutting down")
				}
			}
			return
		case ev := <-s.ln.Events():
			s.event(&ev)
			// Whatever else has arrived goes out in the same write.
			for more := true; more; {
				select {
				case ev := <-s.ln.Events():
					s.event(&ev)
				default:
					more = false
				}
			}
			s.flush()
		}
	}
}

func (s *session) event(ev *dlm.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.Type {
	case dlm.EventReleased, dlm.EventExpired, dlm.EventForceReleased:
		g := grant{ev.Key, ev.Token}
		h := s.grants[g]
		switch {
		case h == nil:
			if len(s.early) >= sessionMaxInFlight {
				clear(s.early) // a bound; such ends are for others' leases
			}
			s.early[g] = ev
		case h.releasing:
			h.ended = ev
		default:
			s.pushEnded(h, ev)
			s.forget(h)
		}
	case dlm.EventWaiting:
		for h := range s.byKey[ev.Key] {
			s.push(struct {
				Waiting wireWaiting `json:"waiting"`
			}{wireWaiting{h.id, ev.Key.Name, ev.Key.Scope(), ev.HolderID, ev.Mode.String(), ev.At.UTC()}})
		}
	}
}

// pushEnded pushes the end of h; s.mu is held.
func (s *session) pushEnded(h *held, ev *dlm.Event) {
	reason := map[dlm.EventType]string{dlm.EventReleased: "released", dlm.EventExpired: "expired", dlm.EventForceReleased: "force_released"}[ev.Type]
	s.push(struct {
		LeaseEnded wireLeaseEnded `json:"lease_ended"`
	}{wireLeaseEnded{h.id, ev.Key.Name, ev.Key.Scope(), ev.Token, reason, ev.At.UTC()}})
}

type wireReply struct {
	ID     int64      `json:"id"`
	Result any        `json:"result,omitempty"`
	Error  *wireError `json:"error,omitempty"`
}

// reply queues the answer to request id.
func (s *session) reply(id int64, result any, err error) {
	var buf [512]byte
	var b []byte
	if err != nil {
		we := s.wireError(err)
		b = mustMarshal(wireReply{ID: id, Error: &we})
	} else {
		b = appendReply(buf[:0], id, result)
	}
	s.mu.Lock()
	s.queue(b)
	s.mu.Unlock()
	s.flush()
}

// appendReply appends the reply with result to request id. Leases, the
// result of nearly every request, are encoded by hand (wire.Lease.AppendJSON).
func appendReply(b []byte, id int64, result any) []byte {
	b = strconv.AppendInt(append(b, `{"id":`...), id, 10)
	switch r := result.(type) {
	case wire.Lease:
		b = r.AppendJSON(append(b, `,"result":`...))
	case wireRenewResult:
		b = append(b, `,"result":{"leases":[`...)
		for i, l := range r.Leases {
			if i > 0 {
				b = append(b, ',')
			}
			if wl, ok := l.(wire.Lease); ok {
				b = wl.AppendJSON(b)
			} else {
				b = append(b, mustMarshal(l)...)
			}
		}
		b = append(b, "]}"...)
	default:
		return append(b[:0], mustMarshal(wireReply{ID: id, Result: result})...)
	}
	return append(b, '}')
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("dlmhttp: marshal session message: " + err.Error())
	}
	return b
}

// wireError shows err as a reply's error, as the HTTP API would.
func (s *session) wireError(err error) wireError {
	var de *dlm.Error
	switch {
	case errors.As(err, &de) && (de.Code == dlm.CodeCancelled || StatusOf(de.Code) != http.StatusInternalServerError):
		if de.Cause != nil {
			s.h.log.Error("session request failed", "code", de.Code, "err", de.Cause)
		}
		return wireError{Code: de.Code, Message: de.Message, Details: details(de)}
	case s.ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return wireError{Code: dlm.CodeUnavailable, Message: "request cancelled"}
	}
	s.h.log.Error("internal error", "route", "/v1/session", "err", err)
	return wireError{Code: dlm.CodeInternal, Message: "internal error"}
}

// push queues message v for the writer; s.mu is held.
func (s *session) push(v any) { s.queue(mustMarshal(v)) }

// queue queues msg, as its frame, for the writer; s.mu is held. A client
// that lets too much pile up is closed: it must not hold the server's
// memory.
func (s *session) queue(msg []byte) {
	if len(s.out)+len(msg) > sessionMaxOutbox {
		go s.conn.Close(closeSlowConsumer, dlm.CodeSlowConsumer+": too many messages not read")
		return
	}
	s.out = appendTextFrame(s.out, msg)
}

// flush writes the queued frames, unless another goroutine is writing
// them: the goroutine whose reply finds the connection idle writes it and
// whatever queues meanwhile, so that a reply needs no hand-off to a writer,
// and the frames ready at one time go out in one write to the socket.
func (s *session) flush() {
	s.mu.Lock()
	if s.writing || len(s.out) == 0 {
		s.mu.Unlock()
		return
	}
	s.writing = true
	for len(s.out) > 0 && !s.dead {
		batch := s.out
		s.out, s.spare = s.spare[:0], nil
		s.mu.Unlock()
		// Not read for writeTimeout: as slow as a watcher left behind.
		err := s.fc.writeFrames(batch, writeTimeout)
		s.mu.Lock()
		if cap(batch) <= 64<<10 {
			s.spare = batch // a burst's buffer is not kept for the session's life
		}
		if err != nil {
			s.dead = true
			s.mu.Unlock()
			s.conn.CloseNow()
			s.cancel(err)
			s.mu.Lock()
		}
	}
	s.writing = false
	s.mu.Unlock()
}
