package dlmhttp_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/helpers"

	dlmhttp "github.com/dlmhq/dlm/http"
)

// The API tests' answers are all checked against the OpenAPI document:
// api.do calls checkResponse on every response it reads, so a field added,
// renamed or retyped in an answer without the document fails the test that
// got it.

var (
	// openAPI validates responses against dlmhttp.OpenAPI, with formats
	// (date-time) asserted. The validator is built once; calls to it are
	// serialized, since it keeps caches that it does not document as
	// safe for concurrent use.
	openAPI = sync.OnceValues(func() (validator.Validator, error) {
		doc, err := libopenapi.NewDocument(dlmhttp.OpenAPI)
		if err != nil {
			return nil, err
		}
		v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
		if len(errs) > 0 {
			return nil, fmt.Errorf("building the validator: %v", errs)
		}
		return v, nil
	})
	openAPIMu sync.Mutex
)

// checkResponse fails t unless resp (whose body is body) is an answer the
// OpenAPI document allows to req: a documented status of the route with a
// body of its schema. A request to a path the document does not have must
// have been refused with a 4xx error object: the server serves no route
// that the document leaves out.
func checkResponse(t testing.TB, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	v, err := openAPI()
	if err != nil {
		t.Fatalf("OpenAPI document: %v", err)
	}
	req = documentedRequest(req)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	openAPIMu.Lock()
	ok, errs := v.ValidateHttpResponse(req, resp)
	openAPIMu.Unlock()
	if ok {
		return
	}
	for _, e := range errs {
		if e.ValidationType == helpers.PathValidation {
			if resp.StatusCode >= 400 && resp.StatusCode < 500 && bytes.Contains(body, []byte(`"error":`)) {
				return // an undocumented path, refused
			}
			t.Errorf("%s %s: the OpenAPI document has no such route, yet it answered %d %s", req.Method, req.URL.EscapedPath(), resp.StatusCode, body)
			return
		}
	}
	var msgs []string
	for _, e := range errs {
		m := e.Message + ": " + e.Reason
		for _, se := range e.SchemaValidationErrors {
			m += "; " + se.FieldPath + ": " + se.Reason
		}
		msgs = append(msgs, m)
	}
	t.Errorf("%s %s answered %d %s, which the OpenAPI document does not allow:\n  %s",
		req.Method, req.URL.EscapedPath(), resp.StatusCode, body, strings.Join(msgs, "\n  "))
}

// documentedRequest returns req with a lock name in its path written as
// the document has it, one segment with "/" percent-encoded: the server
// also takes the slashes plain (see the routes' doc), which OpenAPI
// cannot say.
func documentedRequest(req *http.Request) *http.Request {
	p := req.URL.EscapedPath()
	rest, ok := strings.CutPrefix(p, "/v1/locks/")
	if !ok || !strings.Contains(rest, "/") {
		return req
	}
	suffix := ""
	if req.Method == http.MethodPost {
		for _, s := range []string{"/acquire", "/force-release"} {
			if strings.HasSuffix(rest, s) {
				rest, suffix = strings.TrimSuffix(rest, s), s
				break
			}
		}
	}
	r := req.Clone(req.Context())
	u := *req.URL
	u.RawPath = "/v1/locks/" + strings.ReplaceAll(rest, "/", "%2F") + suffix
	var err error
	if u.Path, err = url.PathUnescape(u.RawPath); err != nil {
		return req
	}
	r.URL = &u
	return r
}
