package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The session protocol of the bench (--protocol session): each client is
// one WebSocket to GET /v1/session, on which it sends one request at a time
// as the HTTP clients do, so that the two protocols are compared on the same
// work. Pushes (lease_ended, waiting) are read and skipped.

// benchSession is one client's session, shared by its --pipeline workers.
// It reconnects on the next request after an error; it never retries a
// request.
type benchSession struct {
	t   *benchTarget
	url string

	mu      sync.Mutex
	c       *websocket.Conn
	id      int64
	pending map[int64]chan []byte // nil reply: the connection broke
	msg     []byte                // the request being sent
}

func newBenchSession(t *benchTarget, rawURL string) *benchSession {
	u := strings.TrimRight(rawURL, "/") + "/v1/session"
	return &benchSession{t: t, url: u, pending: map[int64]chan []byte{}}
}

// do sends one request, body being its fields after id (`"op":…`), and
// returns its reply; ok is false for an error reply. A request not
// answered within timeout closes the connection. The bench is on the
// server's machine, so it takes no context per request: registering one
// with the connection's write costs more than the write.
func (s *benchSession) do(body []byte, timeout time.Duration) (resp []byte, ok bool, err error) {
	s.mu.Lock()
	if s.c == nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		c, _, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {strings.TrimSuffix(strings.TrimPrefix(s.t.auth, "Authorization: "), "\r\n")}},
		})
		cancel()
		if err != nil {
			s.mu.Unlock()
			return nil, false, &netError{err}
		}
		c.SetReadLimit(1 << 20)
		s.c = c
		go s.read(c)
	}
	s.id++
	id := s.id
	ch := make(chan []byte, 1)
	s.pending[id] = ch
	s.msg = append(strconv.AppendInt(append(s.msg[:0], `{"id":`...), id, 10), ',')
	s.msg = append(append(s.msg, body...), '}')
	c := s.c
	timer := time.AfterFunc(timeout, func() { c.CloseNow() })
	defer timer.Stop()
	err = c.Write(context.Background(), websocket.MessageText, s.msg)
	s.mu.Unlock()
	if err != nil {
		c.CloseNow()
		return nil, false, &netError{err}
	}
	m := <-ch
	if m == nil {
		return nil, false, &netError{errors.New("session closed (or the request timed out)")}
	}
	// Replies are {"id":N,"result":…} or {"id":N,"error":…}, as the
	// server writes them.
	return m, !bytes.Contains(m[:min(len(m), 32)], []byte(`,"error"`)), nil
}

// read hands replies to their requests until c breaks; pushes (no id) are
// skipped.
func (s *benchSession) read(c *websocket.Conn) {
	for {
		_, m, err := c.Read(context.Background())
		if err != nil {
			break
		}
		id, err := strconv.ParseInt(string(jsonField(m, `"id"`)), 10, 64)
		if err != nil || !bytes.HasPrefix(m, []byte(`{"id":`)) {
			continue
		}
		s.mu.Lock()
		ch := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
	c.CloseNow()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == c {
		s.c = nil
	}
	for id, ch := range s.pending {
		ch <- nil
		delete(s.pending, id)
	}
}

// sessCall is call for a session request.
func (w *benchWorker) sessCall(op benchOp, body []byte, wait time.Duration) (resp []byte, ok bool) {
	t0 := time.Now()
	resp, ok, err := w.sess.do(body, wait+benchTimeout)
	return w.record(op, time.Since(t0), ok, 0, resp, err)
}

// releaseBody is the body of a release of the lease in an acquire's reply.
func (w *benchWorker) releaseBody(resp []byte) ([]byte, bool) {
	id := jsonField(resp, `"lease_id"`)
	w.path = append(append(append(w.path[:0], `"op":"release","lease_id":"`...), id...), '"')
	return w.path, len(id) > 0
}

// sessionUncontended is uncontended over a session.
func (w *benchWorker) sessionUncontended() {
	body := fmt.Appendf(nil, `"op":"acquire","name":%q,"holder_id":%q,"ttl_ms":%d`, w.r.prefix+"u/"+strconv.Itoa(w.id), w.holder(), w.r.cfg.ttl.Milliseconds())
	for !w.r.stopping.Load() {
		resp, ok := w.sessCall(opAcquire, body, 0)
		if !ok {
			continue
		}
		rel, ok := w.releaseBody(resp)
		if !ok {
			continue
		}
		if _, ok := w.sessCall(opRelease, rel, 0); ok {
			w.r.done.Add(1)
		}
	}
}

// sessionContended is contended over a session.
func (w *benchWorker) sessionContended() {
	body := fmt.Appendf(nil, `"op":"acquire","name":%q,"holder_id":%q,"ttl_ms":%d,"wait_ms":%d`, w.r.prefix+"c", w.holder(), w.r.cfg.ttl.Milliseconds(), w.r.cfg.wait.Milliseconds())
	for !w.r.stopping.Load() {
		sent := time.Since(w.r.start)
		resp, ok := w.sessCall(opAcquire, body, w.r.cfg.wait)
		if !ok {
			continue
		}
		recv := time.Since(w.r.start)
		token, _ := strconv.ParseInt(string(jsonField(resp, `"fencing_token"`)), 10, 64)
		rel, ok := w.releaseBody(resp)
		if !ok {
			continue
		}
		w.grants = append(w.grants, grantRecord{token, sent, recv})
		if _, ok := w.sessCall(opRelease, rel, 0); ok {
			w.r.done.Add(1)
		}
	}
}

// sessionHold is hold over a session.
func (w *benchWorker) sessionHold() {
	w.hold(func(k int) ([]byte, bool) {
		body := fmt.Appendf(w.path[:0], `"op":"acquire","name":%q,"holder_id":%q,"ttl_ms":%d`, w.r.prefix+"h/"+strconv.Itoa(k), w.holder(), w.r.cfg.ttl.Milliseconds())
		return w.sessCall(opAcquire, body, 0)
	})
}
