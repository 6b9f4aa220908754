package dashboard

import (
	"strings"
	"testing"
)

// TestPolicyHost: the Host header is the client's, so only a plain
// host[:port] is written into the policy.
func TestPolicyHost(t *testing.T) {
	for host, ws := range map[string]bool{
		"127.0.0.1:7070":         true,
		"dlm.example.com":        true,
		"[::1]:7070":             true,
		"":                       false,
		"a b":                    false,
		"x; script-src *":        false,
		"x'unsafe-inline'":       false,
		"x,y":                    false,
		strings.Repeat("a", 256): false,
	} {
		p := Policy(host)
		if got := strings.Contains(p, "ws://"); got != ws {
			t.Errorf("Policy(%q) = %q: WebSocket source %v, want %v", host, p, got, ws)
		}
		if strings.Count(p, "script-src") != 1 || !strings.Contains(p, "script-src 'self';") {
			t.Errorf("Policy(%q) = %q: script-src is not 'self' alone", host, p)
		}
	}
}
