package dlmhttp_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/dlmhq/dlm/dlmtest"
	"github.com/dlmhq/dlm/dlmtest/testserver"
)

// TestFailuresAreLoggedRateLimited: while storage fails, every request is
// answered 503, but the warn line of a failed request is written once per
// interval, not once per request, so the log cannot fill the disk again.
func TestFailuresAreLoggedRateLimited(t *testing.T) {
	var logs dlmtest.Buffer
	s := testserver.New(t, &testserver.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := s.Store.Close(); err != nil { // storage gone: every request fails
		t.Fatal(err)
	}
	for range 50 {
		req, _ := http.NewRequest("GET", s.URL+"/v1/locks/a", nil)
		req.Header.Set("Authorization", "Bearer "+s.TenantKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status with storage closed = %d, want 503", resp.StatusCode)
		}
	}
	if n := strings.Count(logs.String(), "msg=request"); n != 1 {
		t.Errorf("50 failed requests wrote %d request lines; want 1:\n%s", n, logs.String())
	}
}
