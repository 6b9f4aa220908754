package dlmhttp

import (
	_ "embed"
	"net/http"
)

// OpenAPI is the OpenAPI 3.1 document of the API, served at
// GET /v1/openapi.json. It is written by hand; the package's tests check it
// against the route table in both directions and validate every answer the
// API tests get against its schemas, so it cannot drift from the server.
//
//go:embed openapi.json
var OpenAPI []byte

// openapi serves GET /v1/openapi.json, without a key: a client generator
// needs it before it has one.
func (h *Handler) openapi(w http.ResponseWriter, r *http.Request, c *call) error {
	w.Header().Set("Content-Type", "application/json")
	w.Write(OpenAPI)
	return nil
}
