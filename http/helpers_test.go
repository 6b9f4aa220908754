package dlmhttp_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// httpClient is shared by the tests: keep-alive on, enough idle connections
// for the concurrent tests, and a timeout well above the longest wait used.
var httpClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64},
}

// api calls one server with one key.
type api struct {
	t    testing.TB
	base string
	key  string
}

func tenantAPI(t testing.TB, s *testserver.Server) *api { return &api{t, s.URL, s.TenantKey} }
func adminAPI(t testing.TB, s *testserver.Server) *api  { return &api{t, s.URL, s.AdminKey} }

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic value, failing the test if it is not
// JSON.
func (r *response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %v: %q", r.status, err, r.body)
	}
	return m
}

// errorCode returns the error code of an error response, failing the test
// if the body is not the API's error shape.
func (r *response) errorCode(t testing.TB) string {
	t.Helper()
	var e struct {
		Error *struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("response %d is not an error object: %q", r.status, r.body)
	}
	return e.Error.Code
}

// details returns the details object of an error response, or nil.
func (r *response) details(t testing.TB) map[string]any {
	t.Helper()
	d, _ := r.json(t)["error"].(map[string]any)["details"].(map[string]any)
	return d
}

// do sends a request; body is marshalled unless it is a string or []byte,
// sent as is. Extra headers come in name, value pairs.
func (a *api) do(method, path string, body any, hdr ...string) *response {
	a.t.Helper()
	r, err := a.try(method, path, body, hdr...)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// try is do that returns an error of the exchange instead of failing.
func (a *api) try(method, path string, body any, hdr ...string) (*response, error) {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Transfer-Encoding") && hdr[i+1] == "chunked" {
			// Hide the length so that net/http sends the body chunked.
			req.ContentLength = -1
			req.Body = io.NopCloser(io.MultiReader(req.Body))
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	checkResponse(a.t, req, resp, b)
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// must sends a request and fails the test unless the status is want.
func (a *api) must(want int, method, path string, body any, hdr ...string) map[string]any {
	a.t.Helper()
	r := a.do(method, path, body, hdr...)
	if r.status != want {
		a.t.Fatalf("%s %s = %d %s, want %d", method, path, r.status, r.body, want)
	}
	if len(r.body) == 0 {
		return nil
	}
	return r.json(a.t)
}

// wantError sends a request and fails the test unless it answers status
// with the error code.
func (a *api) wantError(status int, code, method, path string, body any, hdr ...string) *response {
	a.t.Helper()
	r := a.do(method, path, body, hdr...)
	if r.status != status {
		a.t.Fatalf("%s %s = %d %s, want %d %s", method, path, r.status, r.body, status, code)
	}
	if got := r.errorCode(a.t); got != code {
		a.t.Fatalf("%s %s: code %q, want %q (body %s)", method, path, got, code, r.body)
	}
	return r
}

// acquire takes name exclusively for holder and returns the lease object.
func (a *api) acquire(name, holder string, extra map[string]any) map[string]any {
	a.t.Helper()
	body := map[string]any{"holder_id": holder}
	for k, v := range extra {
		body[k] = v
	}
	return a.must(200, "POST", "/v1/locks/"+name+"/acquire", body)
}

// keys returns the sorted keys of m, to compare JSON shapes.
func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
