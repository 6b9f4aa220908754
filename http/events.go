package dlmhttp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/engine"
	"github.com/dlmhq/dlm/wire"
)

// eventQuery reads the filters that history and watch share. since is
// whether ?since= was given.
func (h *Handler) eventQuery(r *http.Request, c *call) (q engine.EventQuery, since bool, err error) {
	q.Name, _ = c.query.get("name")
	q.Prefix, _ = c.query.get("prefix")
	q.Scope, _ = c.query.get("scope")
	if q.Scope != "" && q.Scope != scopeTenant && q.Scope != scopeGlobal {
		return q, false, dlm.Invalid("scope", "must be %q or %q", scopeTenant, scopeGlobal)
	}
	q.Tenant = c.principal.Tenant
	if t, named := c.query.get("tenant"); named && !c.principal.Admin && t != q.Tenant && q.Scope != scopeGlobal {
		// As on /v1/locks: ?tenant= may only repeat a tenant key's own.
		return q, false, errForeignTenant
	}
	if c.principal.Admin {
		// The admin key belongs to no tenant: it reads one with ?tenant=,
		// or the global scope.
		ns, err := h.namespace(r.Context(), c)
		if err != nil {
			return q, false, err
		}
		if ns == dlm.GlobalNamespace {
			q.Scope = scopeGlobal
			q.Tenant = "*" // no tenant has this name; only global events match
		} else {
			q.Tenant, q.Scope = ns, scopeTenant
		}
	}
	s, since := c.query.get("since")
	if since {
		if q.Since, err = strconv.ParseInt(s, 10, 64); err != nil || q.Since < 0 {
			return q, false, dlm.Invalid("since", "must be an event id (a non-negative integer)")
		}
	}
	return q, since, nil
}

type wireEventList struct {
	Events    []wire.Event `json:"events"`
	NextSince int64        `json:"next_since"`
}

// events serves GET /v1/events: the audit log after ?since=, oldest first.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, c *call) error {
	q, _, err := h.eventQuery(r, c)
	if err != nil {
		return err
	}
	if q.Limit, err = c.query.int("limit", 1, engine.MaxEventLimit, engine.DefaultEventLimit); err != nil {
		return err
	}
	events, next, err := h.engine.Events(r.Context(), q)
	if err != nil {
		return err
	}
	out := wireEventList{Events: make([]wire.Event, len(events)), NextSince: next}
	for i := range events {
		out.Events[i] = wire.FromEvent(&events[i])
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Watch timing.
const (
	// pingEvery is how often the server pings a watcher; a peer that does
	// not answer within pingTimeout is dead and its watch ends.
	pingEvery   = 20 * time.Second
	pingTimeout = 10 * time.Second
	// writeTimeout bounds one message's write: a peer whose TCP window
	// stays shut that long is as slow as one that fell behind.
	writeTimeout = 10 * time.Second
)

// Close codes of a watch, beside the standard ones.
const (
	// closeCompacted: ?since= is older than the retained log.
	closeCompacted websocket.StatusCode = 4001
	// closeSlowConsumer: the watcher fell too far behind.
	closeSlowConsumer websocket.StatusCode = 4002
)

// watchSubprotocol is the WebSocket subprotocol of /v1/watch. A browser,
// which cannot set headers on a WebSocket, offers it along with
// "bearer.<api-key>" to authenticate (see bearer).
const watchSubprotocol = "dlm.v1"

// watch serves GET /v1/watch over WebSocket: the events after ?since= (or,
// without it, from now on), then live events, one JSON text message each.
func (h *Handler) watch(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := checkOrigin(r); err != nil {
		return err
	}
	q, since, err := h.eventQuery(r, c)
	if err != nil {
		return err
	}
	watcher, werr := h.engine.Watch(r.Context(), q, since)
	if werr != nil && !errors.Is(werr, dlm.ErrCompacted) {
		return werr
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{watchSubprotocol}})
	if err != nil {
		if watcher != nil {
			watcher.Close()
		}
		return nil // Accept has answered the request
	}
	if werr != nil {
		conn.Close(closeCompacted, dlm.CodeCompacted) // the reason the API documents
		return nil
	}
	defer watcher.Close()
	// The watch reads nothing from the peer; CloseRead answers its control
	// frames and ends ctx when it goes away.
	ctx := conn.CloseRead(context.WithoutCancel(r.Context()))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go ping(ctx, conn, cancel)
	// Revoking the key ends the watch (but cuts no write short: see below).
	kctx, release := h.engine.KeyContext(ctx, c.principal.KeyID)
	defer release()
	sc := servedConnOf(r)
	var (
		batch []dlm.Event
		buf   []byte
	)
	for {
		ev, err := watcher.Next(kctx)
		if err == nil {
			batch, err = watcher.More(kctx, append(batch[:0], ev), maxWatchBatch)
			if werr := h.writeEvents(ctx, conn, sc, batch, &buf); werr != nil {
				conn.Close(closeSlowConsumer, closeReason(dlm.Errorf(dlm.CodeSlowConsumer, "write timed out")))
				return nil
			}
			if err == nil {
				// A watcher is written to at most once per
				// watchCoalesce: what comes meanwhile waits in its
				// buffer, without waking it, and goes out in the next
				// write, unless the buffer fills up first.
				t := time.NewTimer(watchCoalesce)
				select {
				case <-t.C:
				case <-watcher.Filling():
				case <-kctx.Done():
				}
				t.Stop()
				continue
			}
		}
		if errors.Is(context.Cause(kctx), engine.ErrKeyRevoked) && ctx.Err() == nil {
			conn.Close(websocket.StatusPolicyViolation, closeReason(engine.ErrKeyRevoked))
			return nil
		}
		if ctx.Err() != nil {
			conn.CloseNow()
			return nil
		}
		conn.Close(h.watchClose(r, err))
		return nil
	}
}

// Watch batching.
const (
	// watchCoalesce is the least time between two writes to one watcher:
	// a busy lock path makes one write of many events per watcher, not
	// one per event, so that many watchers cannot tax it. An event after
	// a quiet spell goes out at once.
	watchCoalesce = 250 * time.Millisecond
	// maxWatchBatch bounds the events of one write.
	maxWatchBatch = 256
)

// writeEvents sends batch, one message per event. On a connection that a
// Server serves it writes the frames itself, all in one write, from bytes
// encoded once for every watcher (frameCache): what each watcher costs per
// event is a copy. Otherwise (a Handler served by other means) it writes
// through the WebSocket library, a message at a time. A write is never cut
// short when the engine drops the watch: a frame cut in half would leave no
// way to send the close frame after it, and the watcher would see a bare
// EOF instead of 4002. A peer that does not read at all still ends at
// writeTimeout.
func (h *Handler) writeEvents(ctx context.Context, conn *websocket.Conn, sc *servedConn, batch []dlm.Event, buf *[]byte) error {
	if sc != nil {
		b := (*buf)[:0]
		for i := range batch {
			b = append(b, h.frames.frame(&batch[i])...)
		}
		*buf = b
		return sc.writeFrames(b, writeTimeout)
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	for i := range batch {
		msg := h.frames.frame(&batch[i])
		if err := conn.Write(wctx, websocket.MessageText, msg[frameHeaderLen(msg):]); err != nil {
			return err
		}
	}
	return nil
}

// frameCache keeps recent events, by ID, as the WebSocket frames that carry
// them, so that an event that many watchers are sent is encoded once and
// its bytes shared.
type frameCache struct {
	mu   sync.Mutex
	m    map[int64][]byte
	ring []int64 // IDs in m, oldest at next once full
	next int
}

// frameCacheSize is how many encoded events are kept: more than a burst's
// worth, so that watchers that lag a little still find theirs.
const frameCacheSize = 4096

// frame returns the unmasked, unfragmented text frame (RFC 6455 §5.2) of
// ev's message. The bytes are shared: never change them.
func (c *frameCache) frame(ev *dlm.Event) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.m[ev.ID]; ok {
		return b
	}
	msg, _ := json.Marshal(wire.FromEvent(ev))
	b := appendTextFrame(make([]byte, 0, len(msg)+10), msg)
	if c.m == nil {
		c.m = make(map[int64][]byte, frameCacheSize)
	}
	if len(c.ring) < frameCacheSize {
		c.ring = append(c.ring, ev.ID)
	} else {
		delete(c.m, c.ring[c.next])
		c.ring[c.next] = ev.ID
		c.next = (c.next + 1) % frameCacheSize
	}
	c.m[ev.ID] = b
	return b
}

// frameHeaderLen is the length of the header of a frame that frame made.
func frameHeaderLen(f []byte) int {
	switch f[1] {
	case 126:
		return 4
	case 127:
		return 10
	}
	return 2
}

// watchClose returns the close code and reason of a watch that err ended.
func (h *Handler) watchClose(r *http.Request, err error) (websocket.StatusCode, string) {
	var de *dlm.Error
	switch {
	case !errors.As(err, &de):
	case de.Code == dlm.CodeSlowConsumer:
		return closeSlowConsumer, closeReason(de)
	case de.Code == dlm.CodeUnavailable:
		if de.Cause != nil {
			h.logCause(r, de)
		}
		return websocket.StatusGoingAway, closeReason(de)
	}
	h.log.Error("watch failed", "err", err)
	return websocket.StatusInternalError, dlm.CodeInternal + ": internal error"
}

// ping pings the peer until ctx ends, and calls dead when it stops answering.
func ping(ctx context.Context, conn *websocket.Conn, dead func()) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := conn.Ping(pctx)
		cancel()
		if err != nil {
			dead()
			return
		}
	}
}

// subprotocolKey returns the API key a browser offered as the WebSocket
// subprotocol "bearer.<key>", if any.
func subprotocolKey(r *http.Request) string {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if key, ok := strings.CutPrefix(strings.TrimSpace(p), "bearer."); ok {
				return key
			}
		}
	}
	return ""
}
