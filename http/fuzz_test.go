package dlmhttp_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/dlmtest/testserver"
	"github.com/dlmhq/dlm/engine"
	dlmhttp "github.com/dlmhq/dlm/http"
)

// fuzzServer is a real engine and store with the handler called directly,
// without a network round trip, so that fuzzing runs fast. Waits are capped
// short so that no input can park the fuzzer.
func fuzzServer(f *testing.F) (*testserver.Server, http.Handler) {
	s := testserver.New(f, &testserver.Options{Engine: engine.Options{MaxWait: 50 * time.Millisecond}})
	return s, dlmhttp.NewHandler(s.Engine)
}

// serve runs one request through h and returns the recorded answer after
// checking what every answer must be: JSON, and an error in the API's error shape
// with the status of its code.
func serve(t *testing.T, h http.Handler, key string, req *http.Request) (int, map[string]any) {
	t.Helper()
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%d answer has Content-Type %q: %q", rec.Code, ct, rec.Body.Bytes())
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("%d answer is not a JSON object: %q", rec.Code, rec.Body.Bytes())
	}
	if rec.Code == 200 {
		return rec.Code, m
	}
	e, _ := m["error"].(map[string]any)
	code, _ := e["code"].(string)
	if msg, _ := e["message"].(string); code == "" || msg == "" {
		t.Fatalf("%d answer is not an error object: %q", rec.Code, rec.Body.Bytes())
	}
	if want := dlmhttp.StatusOf(code); want != rec.Code && !(rec.Code == 405 && code == dlm.CodeInvalidArgument) {
		t.Fatalf("code %s answered with %d, want %d", code, rec.Code, want)
	}
	d, _ := e["details"].(map[string]any)
	switch code {
	case dlm.CodeInvalidArgument:
		if f, _ := d["field"].(string); f == "" && rec.Code == 400 {
			t.Fatalf("invalid_argument without details.field: %q", rec.Body.Bytes())
		}
	case dlm.CodeLockConflict, dlm.CodeWaitTimeout:
		if _, ok := d["holders"].([]any); !ok {
			t.Fatalf("%s without details.holders: %q", code, rec.Body.Bytes())
		}
	case dlm.CodeInternal:
		t.Fatalf("internal error: %q", rec.Body.Bytes())
	}
	return rec.Code, m
}

// FuzzAcquireBody feeds arbitrary bodies to the acquire route: it never
// panics, answers JSON with a status of the API's table of error codes, accepts only JSON
// objects, and a grant matches what was asked.
func FuzzAcquireBody(f *testing.F) {
	for _, seed := range []string{
		`{"holder_id":"w"}`,
		`{"holder_id":"w","mode":"shared","ttl_ms":1000,"wait_ms":10,"scope":"global","idempotency_key":"k","dry_run":false}`,
		`{"holder_id":"w","dry_run":true}`,
		`{"holder_id":"w","ttl_ms":0}`,
		`{"holder_id":"w","wait_ms":-1}`,
		`{"holder_id":"w","mode":"bogus"}`,
		`{"holder_id":null}`,
		`{"holder_id":"w"} trailing`,
		`[]`,
		``,
		`{"holder_id":"w","ttl_ms":1e3}`,
		`{"holder_id":"\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	s, h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/locks/fuzz/acquire", bytes.NewReader(body))
		status, m := serve(t, h, s.TenantKey, req)
		switch status {
		case 200, 400, 409, 413, 422, 429:
		default:
			t.Fatalf("status %d for body %q", status, body)
		}
		if status == 400 {
			return
		}
		// Accepted for processing: the body was one JSON object (or empty).
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) > 0 && (trimmed[0] != '{' || !json.Valid(trimmed)) {
			t.Fatalf("accepted a body that is not a JSON object: %q", body)
		}
		if status != 200 {
			return
		}
		if _, dry := m["would_grant"]; dry {
			if _, ok := m["holders"].([]any); !ok {
				t.Fatalf("dry run without holders: %v", m)
			}
			return
		}
		var in struct {
			HolderID string `json:"holder_id"`
		}
		json.Unmarshal(trimmed, &in)
		id, _ := m["lease_id"].(string)
		if id == "" || m["name"] != "fuzz" || m["holder_id"] != in.HolderID || m["fencing_token"].(float64) < 1 {
			t.Fatalf("grant %v for body %q", m, body)
		}
		if st, _ := serve(t, h, s.TenantKey, httptest.NewRequest("DELETE", "/v1/leases/"+id, nil)); st != 200 && st != 410 {
			t.Fatalf("release: %d", st)
		}
	})
}

// FuzzLockName feeds arbitrary path text as a lock name to inspect and to
// dry-run acquire: a valid name (after percent-decoding) answers 200 with
// exactly that name, anything else 400 invalid_argument naming the field
// "name"; never a redirect or a panic.
func FuzzLockName(f *testing.F) {
	for _, seed := range []string{
		"orders%2F42", "orders/42", "a//b", "", "%20", "%zz", "x/acquire", "a%2Facquire",
		"AZaz09._~:/@+=-", "caf%C3%A9", strings.Repeat("n", 257), "..", "./a", "a/", "%2F",
	} {
		f.Add(seed)
	}
	s, h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, raw string) {
		if strings.ContainsAny(raw, "?#") {
			return // a query or fragment, not part of the name
		}
		u, err := url.ParseRequestURI("/v1/locks/" + raw)
		if err != nil {
			return // net/http refuses such a request line before any handler
		}
		escaped := strings.TrimPrefix(u.EscapedPath(), "/v1/locks/")
		name, err := url.PathUnescape(escaped)
		valid := err == nil && dlm.ValidateName(name) == nil

		check := func(what string, status int, m map[string]any) {
			switch {
			case valid && status != 200:
				t.Fatalf("%s %q (name %q): %d %v, want 200", what, raw, name, status, m)
			case !valid && status != 400:
				t.Fatalf("%s %q: %d %v, want 400", what, raw, status, m)
			case !valid:
				if f := m["error"].(map[string]any)["details"].(map[string]any)["field"]; f != "name" {
					t.Fatalf("%s %q: field %v, want name", what, raw, f)
				}
			}
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.URL = u
		status, m := serve(t, h, s.TenantKey, req)
		check("inspect", status, m)
		if status == 200 && m["name"] != name {
			t.Fatalf("inspect %q answered name %v, want %q", raw, m["name"], name)
		}

		au, err := url.ParseRequestURI("/v1/locks/" + raw + "/acquire")
		if err != nil {
			return
		}
		req = httptest.NewRequest("POST", "/", strings.NewReader(`{"holder_id":"f","dry_run":true}`))
		req.URL = au
		status, m = serve(t, h, s.TenantKey, req)
		check("dry-run acquire", status, m)
	})
}
