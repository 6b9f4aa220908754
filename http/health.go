package dlmhttp

import (
	"net/http"

	"github.com/dlmhq/dlm"
	"github.com/dlmhq/dlm/internal/buildinfo"
)

// healthz serves GET /healthz: the process is alive and serving, and which
// build it is (the version, as `dlm version` prints it).
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request, c *call) error {
	writeJSON(w, http.StatusOK, wireStatus{Status: "ok", Version: buildinfo.Get().Version})
	return nil
}

// readyz serves GET /readyz: 200 while the store answers, 503 unavailable
// otherwise.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := h.engine.Ready(r.Context()); err != nil {
		if dlm.ErrorCode(err) != dlm.CodeUnavailable {
			h.log.Warn("readiness check failed", "err", err)
			err = dlm.Errorf(dlm.CodeUnavailable, "storage is not reachable")
		}
		return err
	}
	writeJSON(w, http.StatusOK, wireStatus{Status: "ready"})
	return nil
}
