package dlmhttp

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// notServedYet are routes the document describes that this package does
// not serve yet (none today). Each entry goes once its route is in
// routeTable; the check below then covers it.
var notServedYet = []string{}

// TestOpenAPIDocument checks that the document is OpenAPI 3.1 and valid
// by its specification's schema.
func TestOpenAPIDocument(t *testing.T) {
	doc, err := libopenapi.NewDocument(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1.") {
		t.Errorf("OpenAPI version %q, want 3.1.x", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("%s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s (line %d): %s", se.KeywordLocation, se.Line, se.Reason)
			}
		}
	}
}

// TestOpenAPIRoutes compares the routes the handler serves with the
// document's operations, both ways: every route served is documented, and
// every documented operation is served (but notServedYet).
func TestOpenAPIRoutes(t *testing.T) {
	doc, err := libopenapi.NewDocument(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range m.Model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().FromOldest() {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}

	// The handler as dlm serve builds it: /metrics comes through WithRoute.
	h := NewHandler(nil, WithRoute("GET", "/metrics", http.NotFoundHandler()))
	var served []string
	for _, r := range h.routes {
		// OpenAPI has no "{x...}": the document's {name} is one segment
		// with "/" percent-encoded, which the route also takes.
		served = append(served, r.method+" "+strings.ReplaceAll(r.pattern, "...}", "}"))
	}

	for _, s := range served {
		if !slices.Contains(documented, s) {
			t.Errorf("route %s is served but not in openapi.json", s)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) && !slices.Contains(notServedYet, d) {
			t.Errorf("openapi.json documents %s, which is not served", d)
		}
	}
	for _, n := range notServedYet {
		if slices.Contains(served, n) {
			t.Errorf("%s is served now: remove it from notServedYet", n)
		}
		if !slices.Contains(documented, n) {
			t.Errorf("%s is in notServedYet but not documented", n)
		}
	}
}
