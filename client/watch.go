package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/wire"
)

// WatchOptions selects the events Watch streams. Zero values are defaults.
type WatchOptions struct {
	Name   string // only events of this lock; default any
	Prefix string // only events of names with this prefix; default any
	// Scope restricts events to one scope. Default: the server's, which
	// is the caller's tenant and the global scope together.
	Scope Scope
	// Since is the id of the last event already seen (exclusive): Watch
	// first replays the retained events after it. Default 0: events after
	// the end of the log when Watch is called (its first request), which
	// is where it resumes from if it reconnects before seeing one.
	Since int64
	// FromStart replays every retained event first, from the oldest.
	// It overrides Since.
	FromStart bool
	// sinceZero: Since is 0 meaning "after event 0", not "from now"
	// (Election.Observe on a log that had no event yet).
	sinceZero bool
}

// Watch streams events over the server's WebSocket (GET /v1/watch), in id
// order: first the retained events after opts.Since, then live ones.
//
// Unless opts.Since is set, Watch first asks where to start (GET
// /v1/events): the end of the log, or its oldest retained event with
// FromStart. When the connection drops (network error, server restart, or
// the server closing a subscriber that fell behind) Watch reconnects with
// backoff and resumes after the last event it yielded, or from where it
// started if it has yielded none, so no event is skipped or repeated. It yields an error, and stops, when:
//   - ctx ends (the error is joined with ctx.Err());
//   - the events to resume from are gone (matches ErrCompacted);
//   - the server refuses the watch (a *dlm.Error, e.g. unauthenticated);
//   - it cannot reconnect for the client's RetryTimeout.
//
// Breaking out of the loop closes the connection.
func (c *Client) Watch(ctx context.Context, opts *WatchOptions) iter.Seq2[dlm.Event, error] {
	o := WatchOptions{}
	if opts != nil {
		o = *opts
	}
	return func(yield func(dlm.Event, error) bool) {
		since, err := c.watchStart(ctx, &o)
		if err != nil {
			yield(dlm.Event{}, fmt.Errorf("watch: %w", err))
			return
		}
		var failingSince time.Time // first failure of the current outage
		for attempt := 0; ; attempt++ {
			conn, err := c.dialWatch(ctx, &o, since)
			if err == nil {
				last, stop, rerr := readEvents(ctx, conn, since, yield)
				conn.CloseNow()
				if stop {
					return
				}
				if last > since {
					// The connection delivered: a new outage starts now.
					since, failingSince, attempt = last, time.Time{}, 0
				}
				err = rerr
			}
			switch {
			case ctx.Err() != nil:
				yield(dlm.Event{}, ctxErr(ctx, nil))
				return
			case !transient(err):
				yield(dlm.Event{}, fmt.Errorf("watch: %w", err))
				return
			case failingSince.IsZero():
				failingSince = time.Now()
			case time.Since(failingSince) > c.retryTimeout:
				yield(dlm.Event{}, fmt.Errorf("watch: giving up reconnecting: %w", err))
				return
			}
			if sleep(ctx, backoff(attempt, 100*time.Millisecond, 5*time.Second)) != nil {
				yield(dlm.Event{}, ctxErr(ctx, err))
				return
			}
		}
	}
}

// watchStart returns the id after which a watch starts: o.Since, the event
// before the oldest retained one (FromStart), or the end of the log now. A
// watch that knows its start never loses the events made while it
// reconnects, even before it has seen one.
func (c *Client) watchStart(ctx context.Context, o *WatchOptions) (int64, error) {
	if (o.Since > 0 || o.sinceZero) && !o.FromStart {
		return o.Since, nil
	}
	if o.FromStart {
		page, err := c.eventPage(ctx, 0)
		if err != nil || len(page.Events) > 0 {
			return page.first() - 1, err
		}
		// Nothing retained that this key may see: start at the end.
	}
	// Past the end of the log, history answers where the log ends.
	page, err := c.eventPage(ctx, math.MaxInt64)
	if err == nil && page.NextSince == math.MaxInt64 {
		// A server that does not say where its log ends: start at its
		// present, as it does without since.
		return -1, nil
	}
	return page.NextSince, err
}

// eventPage is one answer of GET /v1/events.
type eventPage struct {
	Events    []wire.Event `json:"events"`
	NextSince int64        `json:"next_since"`
}

func (p *eventPage) first() int64 {
	if len(p.Events) == 0 {
		return 0
	}
	return p.Events[0].ID
}

// eventPage reads the first event after since, of any lock the key sees.
func (c *Client) eventPage(ctx context.Context, since int64) (*eventPage, error) {
	q := url.Values{"limit": {"1"}, "since": {strconv.FormatInt(since, 10)}}
	var p eventPage
	err := c.do(ctx, request{method: http.MethodGet, path: "/v1/events", query: q}, &p)
	return &p, err
}

// dialWatch opens the watch WebSocket for events after since (since < 0:
// after the server's present).
func (c *Client) dialWatch(ctx context.Context, o *WatchOptions, since int64) (*websocket.Conn, error) {
	q := url.Values{}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	if o.Prefix != "" {
		q.Set("prefix", o.Prefix)
	}
	if o.Scope != "" {
		s, err := o.Scope.wire()
		if err != nil {
			return nil, err
		}
		q.Set("scope", s)
	}
	if since >= 0 {
		q.Set("since", strconv.FormatInt(since, 10))
	}
	u := c.base.String() + "/v1/watch"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	dctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient: c.hc,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.key}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(resp.Body)
			return nil, decodeError(resp.StatusCode, b)
		}
		return nil, &netError{err}
	}
	return conn, nil
}

// readEvents yields the events arriving on conn until the connection ends or
// the consumer stops (stop). It returns the id of the last event yielded and
// why the connection ended: a transient error to reconnect after, or a final
// one.
func readEvents(ctx context.Context, conn *websocket.Conn, since int64, yield func(dlm.Event, error) bool) (last int64, stop bool, err error) {
	last = since
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			err = closeError(err)
			if errors.Is(err, dlm.ErrCompacted) {
				return last, false, fmt.Errorf("no events retained after id %d: %w", last, err)
			}
			return last, false, err
		}
		if typ != websocket.MessageText {
			continue
		}
		var w wire.Event
		if err := json.Unmarshal(data, &w); err != nil {
			return last, false, &dlm.Error{Code: dlm.CodeInternal, Message: fmt.Sprintf("decode event: %v", err)}
		}
		if w.ID <= last {
			continue // already yielded before a reconnect
		}
		last = w.ID
		if !yield(eventOf(&w), nil) {
			return last, true, nil
		}
	}
}
