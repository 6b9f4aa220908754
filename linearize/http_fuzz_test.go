package linearize_test

// Fuzz targets for the query strings of the HTTP API's read routes (list
// and inspect). The HTTP package fuzzes request bodies and lock names in
// paths; these cover what comes after the "?": a decoder that must never
// panic or answer 5xx, must answer in the API's error shape, and whose answers
// must keep their promises (sorted, filtered, bounded, paginated without
// gaps or repeats, isolated between tenants).

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
	dlmhttp "github.com/dlmhq/dlm/http"
)

// queryServer is a server with a fixed set of held locks: names in the
// default tenant, in the global scope, and in a tenant "other" whose locks
// the default tenant must never see.
type queryServer struct {
	s *testserver.Server
	h http.Handler
}

var (
	defaultLocks = []string{"a/1", "a/2", "a/3", "a~", "b/x", "b/y", "c", "orders/42", "z"}
	globalLocks  = []string{"g/1", "g/2"}
	otherLocks   = []string{"a/secret", "secret/1"}
)

func newQueryServer(f *testing.F) *queryServer {
	s := testserver.New(f, &testserver.Options{Engine: engine.Options{MaxWait: 50 * time.Millisecond}})
	ctx := context.Background()
	if _, _, _, err := s.Engine.CreateTenant(ctx, "other"); err != nil {
		f.Fatal(err)
	}
	hold := func(tenant string, ns string, names []string) {
		for _, n := range names {
			_, _, err := s.Engine.Acquire(ctx, engine.AcquireRequest{Tenant: tenant, Key: dlm.Key{Namespace: ns, Name: n}, HolderID: "fuzz", TTL: time.Hour})
			if err != nil {
				f.Fatal(err)
			}
		}
	}
	hold("default", "default", defaultLocks)
	hold("default", dlm.GlobalNamespace, globalLocks)
	hold("other", "other", otherLocks)
	return &queryServer{s: s, h: dlmhttp.NewHandler(s.Engine)}
}

type answer struct {
	status int
	body   map[string]any
	raw    []byte
}

// get serves one GET through the handler and checks what every answer must
// be: JSON, no 5xx, and an error object with a code whose status it has.
func (q *queryServer) get(t *testing.T, key, target string) answer {
	t.Helper()
	req := httptest.NewRequest("GET", "/", nil)
	u, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatalf("bad target %q: %v", target, err)
	}
	req.URL = u
	req.RequestURI = target
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	q.h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, raw: rec.Body.Bytes()}
	if err := json.Unmarshal(a.raw, &a.body); err != nil {
		t.Fatalf("GET %s: %d answer is not a JSON object: %q", target, a.status, a.raw)
	}
	if a.status >= 500 {
		t.Fatalf("GET %s: %d %s", target, a.status, a.raw)
	}
	if a.status != 200 {
		e, _ := a.body["error"].(map[string]any)
		code, _ := e["code"].(string)
		msg, _ := e["message"].(string)
		if code == "" || msg == "" {
			t.Fatalf("GET %s: %d answer is not an error object: %q", target, a.status, a.raw)
		}
		if want := dlmhttp.StatusOf(code); want != a.status {
			t.Fatalf("GET %s: code %s with status %d, want %d", target, code, a.status, want)
		}
	}
	return a
}

func FuzzListQuery(f *testing.F) {
	for _, seed := range []string{
		"", "prefix=a/", "prefix=a%2F&limit=1", "limit=2", "limit=0", "limit=-1", "limit=1001", "limit=1000",
		"limit=1e3", "limit=%201", "scope=global", "scope=tenant", "scope=bogus", "scope=", "tenant=default",
		"tenant=other", "tenant=nope", "cursor=YS8x", "cursor=!!", "cursor=", "cursor=YS8x&limit=1",
		"prefix=a&prefix=b", "unknown=1", "=1", "&&&", "prefix=%zz", "prefix=%00", "prefix=" + strings.Repeat("p", 257),
		"prefix=a;limit=1", "prefix=a/&limit=2&cursor=YS8x", "prefix=secret", "scope=global&tenant=other",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	q := newQueryServer(f)
	f.Fuzz(func(t *testing.T, raw string, admin bool) {
		if strings.ContainsAny(raw, "#") || strings.ContainsAny(raw, "\x00\r\n ") {
			return // not a query a request line can carry
		}
		target := "/v1/locks?" + raw
		if _, err := url.ParseRequestURI(target); err != nil {
			return
		}
		key := q.s.TenantKey
		if admin {
			key = q.s.AdminKey
		}
		a := q.get(t, key, target)
		if a.status != 200 {
			return
		}
		vals, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatalf("GET %s: 200 for a query Go cannot parse: %v", target, err)
		}
		_, startedWithCursor := vals["cursor"]
		prefix := vals.Get("prefix")
		scope := "tenant"
		if vals.Get("scope") == "global" {
			scope = "global"
		}
		limit := engine.DefaultListLimit
		if s := vals.Get("limit"); s != "" {
			if limit, err = strconv.Atoi(s); err != nil {
				t.Fatalf("GET %s: 200 with limit %q", target, s)
			}
		}
		// Walk the pages: every page is sorted, filtered and bounded, and
		// together they hold each lock once.
		var all []string
		seen := map[string]bool{}
		for page := 0; ; page++ {
			var list struct {
				Locks []struct {
					Name    string `json:"name"`
					Scope   string `json:"scope"`
					Holders []any  `json:"holders"`
					Waiters []any  `json:"waiters"`
				} `json:"locks"`
				NextCursor *string `json:"next_cursor"`
			}
			if err := json.Unmarshal(a.raw, &list); err != nil || list.Locks == nil {
				t.Fatalf("GET %s: 200 without a locks list: %q", target, a.raw)
			}
			if len(list.Locks) > limit {
				t.Fatalf("GET %s: %d locks, limit %d", target, len(list.Locks), limit)
			}
			for _, l := range list.Locks {
				if !strings.HasPrefix(l.Name, prefix) {
					t.Fatalf("GET %s: %q does not start with prefix %q", target, l.Name, prefix)
				}
				if l.Scope != scope {
					t.Fatalf("GET %s: lock %q in scope %q, want %q", target, l.Name, l.Scope, scope)
				}
				if len(l.Holders)+len(l.Waiters) == 0 {
					t.Fatalf("GET %s: lock %q with neither holders nor waiters", target, l.Name)
				}
				if seen[l.Name] {
					t.Fatalf("GET %s: %q on two pages", target, l.Name)
				}
				if len(all) > 0 && l.Name <= all[len(all)-1] {
					t.Fatalf("GET %s: %q after %q: not sorted", target, l.Name, all[len(all)-1])
				}
				seen[l.Name] = true
				all = append(all, l.Name)
			}
			if list.NextCursor == nil {
				t.Fatalf("GET %s: no next_cursor field", target)
			}
			if *list.NextCursor == "" || page == 20 {
				break
			}
			vals.Set("cursor", *list.NextCursor)
			next := "/v1/locks?" + vals.Encode()
			a = q.get(t, key, next)
			if a.status != 200 {
				t.Fatalf("GET %s (the next page): %d %s", next, a.status, a.raw)
			}
		}
		// A walk from the beginning finds exactly the held locks of the
		// namespace asked for.
		if !startedWithCursor {
			want := []string{}
			for _, n := range namespaceLocks(vals, admin) {
				if strings.HasPrefix(n, prefix) {
					want = append(want, n)
				}
			}
			slices.Sort(want)
			if !slices.Equal(all, want) {
				t.Fatalf("GET %s: pages list %v, want %v", target, all, want)
			}
		}
	})
}

// namespaceLocks returns the locks held in the namespace a list asks for.
func namespaceLocks(vals url.Values, admin bool) []string {
	switch {
	case vals.Get("scope") == "global":
		return globalLocks
	case admin && vals.Get("tenant") == "other":
		return otherLocks
	}
	return defaultLocks
}

func FuzzInspectQuery(f *testing.F) {
	for _, seed := range []string{
		"", "scope=global", "scope=tenant", "scope=x", "tenant=other", "tenant=default", "tenant=", "tenant=NOPE",
		"scope=global&tenant=other", "scope=tenant&scope=tenant", "limit=1", "%", "scope=%67lobal",
	} {
		f.Add("a/1", seed, false)
		f.Add("secret/1", seed, true)
		f.Add("g/1", seed, false)
	}
	q := newQueryServer(f)
	f.Fuzz(func(t *testing.T, name, raw string, admin bool) {
		if dlm.ValidateName(name) != nil || strings.ContainsAny(raw, "#\x00\r\n ") {
			return
		}
		target := "/v1/locks/" + url.PathEscape(name) + "?" + raw
		if _, err := url.ParseRequestURI(target); err != nil {
			return
		}
		key := q.s.TenantKey
		if admin {
			key = q.s.AdminKey
		}
		a := q.get(t, key, target)
		if a.status != 200 {
			return
		}
		vals, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatalf("GET %s: 200 for a query Go cannot parse: %v", target, err)
		}
		if a.body["name"] != name {
			t.Fatalf("GET %s: name %v", target, a.body["name"])
		}
		held := slices.Contains(namespaceLocks(vals, admin), name)
		holders, _ := a.body["holders"].([]any)
		if holders == nil {
			t.Fatalf("GET %s: holders is not a list: %s", target, a.raw)
		}
		if (len(holders) > 0) != held {
			t.Fatalf("GET %s: %d holders, but %q is held in that namespace: %v (a tenant sees another's lock, or misses its own)", target, len(holders), name, held)
		}
		for _, h := range holders {
			if _, ok := h.(map[string]any)["lease_id"]; ok {
				t.Fatalf("GET %s: a holder shows its lease_id (a bearer capability)", target)
			}
		}
	})
}

func FuzzEventsQuery(f *testing.F) {
	for _, seed := range []string{
		"", "since=0", "since=3", "since=-1", "since=99999999999999999999", "since=1e3", "limit=1", "limit=0",
		"limit=1000", "limit=1001", "name=a/1", "name=", "name=%2F", "prefix=a/", "prefix=g/", "scope=global",
		"scope=tenant", "scope=both", "tenant=other", "tenant=default", "tenant=", "name=a/1&prefix=b",
		"since=2&limit=2", "prefix=secret", "name=secret/1", "scope=global&tenant=other", "since=%201", "since=+1",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	q := newQueryServer(f)
	f.Fuzz(func(t *testing.T, raw string, admin bool) {
		if strings.ContainsAny(raw, "#\x00\r\n ") {
			return
		}
		target := "/v1/events?" + raw
		if _, err := url.ParseRequestURI(target); err != nil {
			return
		}
		key := q.s.TenantKey
		if admin {
			key = q.s.AdminKey
		}
		a := q.get(t, key, target)
		if a.status != 200 {
			return
		}
		vals, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatalf("GET %s: 200 for a query Go cannot parse: %v", target, err)
		}
		var since int64
		if s := vals.Get("since"); s != "" {
			if since, err = strconv.ParseInt(s, 10, 64); err != nil {
				t.Fatalf("GET %s: 200 with since %q", target, s)
			}
		}
		limit := engine.DefaultEventLimit
		if s := vals.Get("limit"); s != "" {
			if limit, err = strconv.Atoi(s); err != nil {
				t.Fatalf("GET %s: 200 with limit %q", target, s)
			}
		}
		// Which scopes and tenants the answer may show.
		scopes := map[string]bool{"tenant": true, "global": true}
		switch {
		case vals.Get("scope") == "global":
			scopes = map[string]bool{"global": true}
		case vals.Get("scope") == "tenant" || admin:
			scopes = map[string]bool{"tenant": true}
		}
		tenantNames := defaultLocks
		if admin && vals.Get("tenant") == "other" {
			tenantNames = otherLocks
		}
		// Walk a few pages: ids strictly increase past since, pages are
		// bounded, and every event passes the filters.
		last := since
		for page := 0; page < 5; page++ {
			var list struct {
				Events []struct {
					ID    int64  `json:"id"`
					Type  string `json:"type"`
					Name  string `json:"name"`
					Scope string `json:"scope"`
				} `json:"events"`
				NextSince *int64 `json:"next_since"`
			}
			if err := json.Unmarshal(a.raw, &list); err != nil || list.Events == nil || list.NextSince == nil {
				t.Fatalf("GET %s: 200 without events and next_since: %q", target, a.raw)
			}
			if len(list.Events) > limit {
				t.Fatalf("GET %s: %d events, limit %d", target, len(list.Events), limit)
			}
			for _, e := range list.Events {
				if e.ID <= last {
					t.Fatalf("GET %s: event %d after %d (since %d)", target, e.ID, last, since)
				}
				last = e.ID
				if n := vals.Get("name"); n != "" && e.Name != n {
					t.Fatalf("GET %s: event on %q, want name %q", target, e.Name, n)
				}
				if !strings.HasPrefix(e.Name, vals.Get("prefix")) {
					t.Fatalf("GET %s: event on %q, want prefix %q", target, e.Name, vals.Get("prefix"))
				}
				if !scopes[e.Scope] {
					t.Fatalf("GET %s: event in scope %q", target, e.Scope)
				}
				if e.Scope == "tenant" && !slices.Contains(tenantNames, e.Name) {
					t.Fatalf("GET %s: event on %q, a lock of another tenant", target, e.Name)
				}
				if e.Scope == "global" && !slices.Contains(globalLocks, e.Name) {
					t.Fatalf("GET %s: global event on %q", target, e.Name)
				}
			}
			if len(list.Events) == 0 {
				// Past the end of the log, next_since is lowered to the
				// last event id, so it may fall below since but never
				// rise above it.
				if *list.NextSince > last {
					t.Fatalf("GET %s: an empty page moves next_since from %d to %d", target, last, *list.NextSince)
				}
				break
			}
			if *list.NextSince < last {
				t.Fatalf("GET %s: next_since %d before the last event %d", target, *list.NextSince, last)
			}
			last = *list.NextSince
			vals.Set("since", strconv.FormatInt(last, 10))
			next := "/v1/events?" + vals.Encode()
			if a = q.get(t, key, next); a.status != 200 {
				t.Fatalf("GET %s (the next page): %d %s", next, a.status, a.raw)
			}
		}
	})
}
