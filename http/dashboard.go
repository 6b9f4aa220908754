package dlmhttp

import (
	"net/http"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/http/dashboard"
)

// dashboardPage serves GET /: the web dashboard. It needs no key: the page
// asks for one and sends it with its own API calls.
func (h *Handler) dashboardPage(w http.ResponseWriter, r *http.Request, c *call) error {
	dashboard.Serve(w, r, "index.html")
	return nil
}

// dashboardFile serves GET /dashboard/{file}: the page's script and styles.
func (h *Handler) dashboardFile(w http.ResponseWriter, r *http.Request, c *call) error {
	if !dashboard.Serve(w, r, c.params.get("file")) {
		return dlm.Errorf(dlm.CodeNotFound, "no dashboard file %q", c.params.get("file"))
	}
	return nil
}
