package linearize

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// SessionTarget performs operations over the session protocol (GET
// /v1/session): every client of a workload shares its one WebSocket, so
// that many operations are in flight on one connection and are answered in
// completion order. A connection that breaks fails its operations in flight
// as unknown outcomes; the next operation opens a new one. Force-releases,
// which need the admin key, go over HTTP.
type SessionTarget struct {
	// URL, Key, AdminKey, Tenant and Client are as for HTTPTarget.
	URL                   func() string
	Key, AdminKey, Tenant string
	Client                *http.Client
	// Timeout bounds an operation beyond any wait. Default 10s.
	Timeout time.Duration

	mu   sync.Mutex
	conn *sessionConn
}

var _ Target = (*SessionTarget)(nil)

type sessionConn struct {
	ws      *websocket.Conn
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan []byte // nil: the connection broke
}

// Do implements Target.
func (s *SessionTarget) Do(ctx context.Context, in Input) Output {
	if in.Kind == ForceRelease {
		h := HTTPTarget{URL: s.URL, Key: s.Key, AdminKey: s.AdminKey, Tenant: s.Tenant, Client: s.Client, Timeout: s.Timeout}
		return h.Do(ctx, in)
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+in.Wait)
	defer cancel()
	req := map[string]any{}
	switch in.Kind {
	case AcquireTry, AcquireWait:
		req = map[string]any{"op": "acquire", "name": in.Name, "holder_id": in.Holder, "mode": in.Mode.String(), "ttl_ms": in.TTL.Milliseconds()}
		if in.Wait > 0 {
			req["wait_ms"] = in.Wait.Milliseconds()
		}
		if in.IdemKey != "" {
			req["idempotency_key"] = in.IdemKey
		}
		if in.Limit > 0 {
			req["limit"] = in.Limit
		}
	case AcquireManyTry, AcquireManyWait:
		b := manyBody(in)
		req = map[string]any{"op": "acquire_many", "locks": b.Locks, "holder_id": b.HolderID, "ttl_ms": *b.TTLMs, "idempotency_key": b.IdempotencyKey}
		if in.Wait > 0 {
			req["wait_ms"] = *b.WaitMs
		}
	case Renew:
		req = map[string]any{"op": "renew", "lease_ids": []string{in.LeaseID}}
	case Release:
		req = map[string]any{"op": "release", "lease_id": in.LeaseID}
	case Inspect:
		req = map[string]any{"op": "inspect", "name": in.Name}
	default:
		panic(fmt.Sprintf("linearize: unknown operation %v", in.Kind))
	}
	res, out := s.call(ctx, req)
	if out.Unknown || out.Code != "" {
		return out
	}
	switch in.Kind {
	case AcquireManyTry, AcquireManyWait:
		var leases wire.Leases
		if err := json.Unmarshal(res, &leases); err != nil {
			return Output{Unknown: true, Err: "decoding the answer: " + err.Error()}
		}
		return manyOutput(out, leases)
	case Inspect:
		var lock struct {
			FencingToken int64        `json:"fencing_token"`
			Holders      []wire.Lease `json:"holders"`
		}
		if err := json.Unmarshal(res, &lock); err != nil {
			return Output{Unknown: true, Err: "decoding the answer: " + err.Error()}
		}
		out.LastToken, out.Holders = lock.FencingToken, holdersOf(lock.Holders)
		return out
	case Renew:
		var r struct {
			Leases []json.RawMessage `json:"leases"`
		}
		if err := json.Unmarshal(res, &r); err != nil || len(r.Leases) != 1 {
			return Output{Unknown: true, Err: fmt.Sprintf("renew answered %s", res)}
		}
		var e struct {
			Error *wireErrorBody `json:"error"`
		}
		if json.Unmarshal(r.Leases[0], &e); e.Error != nil {
			return Output{Code: e.Error.Code, Reason: e.Error.Details.Reason}
		}
		res = r.Leases[0]
	}
	var l wire.Lease
	if err := json.Unmarshal(res, &l); err != nil || l.LeaseID == "" || l.FencingToken == 0 {
		return Output{Unknown: true, Err: fmt.Sprintf("answer without lease_id or fencing_token: %s", res)}
	}
	out.Lease, out.Token, out.Replayed = l.LeaseID, l.FencingToken, l.Replayed
	out.AcquiredAt, out.ExpiresAt = l.AcquiredAt, l.ExpiresAt
	return out
}

type wireErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details struct {
		Reason string `json:"reason"`
		Name   string `json:"name"`
	} `json:"details"`
}

// call sends one request on the session and returns its result. An error
// reply is a definite answer, except unavailable and internal, which are
// unknown outcomes as a 5xx is over HTTP.
func (s *SessionTarget) call(ctx context.Context, req map[string]any) (json.RawMessage, Output) {
	c, err := s.open(ctx)
	if err != nil {
		return nil, Output{Unknown: true, Err: shortErr(err), NotSent: true}
	}
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		return nil, Output{Unknown: true, Err: "session closed", NotSent: true}
	}
	c.nextID++
	req["id"] = c.nextID
	c.pending[c.nextID] = ch
	c.mu.Unlock()
	b, _ := json.Marshal(req)
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.ws.CloseNow()
		return nil, Output{Unknown: true, Err: shortErr(err)}
	}
	var msg []byte
	select {
	case msg = <-ch:
	case <-ctx.Done():
		return nil, Output{Unknown: true, Err: "no reply: " + ctx.Err().Error()}
	}
	if msg == nil {
		return nil, Output{Unknown: true, Err: "session broke before the reply"}
	}
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *wireErrorBody  `json:"error"`
	}
	if err := json.Unmarshal(msg, &r); err != nil {
		return nil, Output{Unknown: true, Err: "decoding the reply: " + err.Error()}
	}
	if r.Error != nil {
		if r.Error.Code == dlm.CodeUnavailable || r.Error.Code == dlm.CodeInternal {
			return nil, Output{Unknown: true, Err: r.Error.Code + ": " + r.Error.Message}
		}
		return nil, Output{Code: r.Error.Code, Reason: r.Error.Details.Reason, Blocker: r.Error.Details.Name}
	}
	return r.Result, Output{}
}

// open returns the session's connection, dialing one if there is none.
func (s *SessionTarget) open(ctx context.Context) (*sessionConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return s.conn, nil
	}
	u := strings.TrimSuffix(s.URL(), "/") + "/v1/session"
	ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: s.Client,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + s.Key}},
	})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	c := &sessionConn{ws: ws, pending: map[int64]chan []byte{}}
	s.conn = c
	go s.read(c)
	return c, nil
}

// read hands replies to their requests until the connection breaks, then
// fails the requests still in flight.
func (s *SessionTarget) read(c *sessionConn) {
	for {
		_, msg, err := c.ws.Read(context.Background())
		if err != nil {
			break
		}
		var head struct {
			ID *int64 `json:"id"`
		}
		if json.Unmarshal(msg, &head) != nil || head.ID == nil {
			continue // a push
		}
		c.mu.Lock()
		ch := c.pending[*head.ID]
		delete(c.pending, *head.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- msg
		}
	}
	c.ws.CloseNow()
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.pending {
		ch <- nil
	}
	c.pending = nil
}

// Close closes the session's connection.
func (s *SessionTarget) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.ws.CloseNow()
	}
}
