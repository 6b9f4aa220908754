package dlmhttp

import (
	"maps"
	"strings"
	"testing"
)

func TestMatchPattern(t *testing.T) {
	for _, c := range []struct {
		pattern, path string
		want          map[string]string // nil: no match
	}{
		{"/v1/locks/{name...}/acquire", "/v1/locks/a/acquire", map[string]string{"name": "a"}},
		{"/v1/locks/{name...}/acquire", "/v1/locks/a/b/acquire", map[string]string{"name": "a/b"}},
		{"/v1/locks/{name...}/acquire", "/v1/locks/a%2Fb/acquire", map[string]string{"name": "a%2Fb"}},
		{"/v1/locks/{name...}/acquire", "/v1/locks//acquire", map[string]string{"name": ""}},
		{"/v1/locks/{name...}/acquire", "/v1/locks/a//b/acquire", map[string]string{"name": "a//b"}},
		{"/v1/locks/{name...}/acquire", "/v1/locks/acquire", nil},
		{"/v1/locks/{name...}/acquire", "/v1/locks/a/acquire/", nil},
		{"/v1/locks/{name...}", "/v1/locks/a/acquire", map[string]string{"name": "a/acquire"}},
		{"/v1/locks/{name...}", "/v1/locks/", map[string]string{"name": ""}},
		{"/v1/locks/{name...}", "/v1/locks", nil},
		{"/v1/locks", "/v1/locks", map[string]string{}},
		{"/v1/locks", "/v1/locks/", nil},
		{"/v1/leases/{lease_id}/renew", "/v1/leases/X/renew", map[string]string{"lease_id": "X"}},
		{"/v1/leases/{lease_id}", "/v1/leases/X/renew", nil},
		{"/v1/tenants/{tenant}/keys/{key_id}", "/v1/tenants/t/keys/k", map[string]string{"tenant": "t", "key_id": "k"}},
		{"/healthz", "healthz", nil},
		{"/healthz", "*", nil},
	} {
		var got map[string]string
		ok := strings.HasPrefix(c.path, "/")
		if ok {
			pt := parsePattern(c.pattern)
			var params pathParams
			params, ok = pt.match(strings.Split(c.path[1:], "/"))
			got = map[string]string{}
			for _, p := range params {
				got[p.name] = p.value
			}
		}
		if ok != (c.want != nil) || ok && len(c.want) > 0 && !maps.Equal(got, c.want) {
			t.Errorf("match(%q, %q) = %v, %v; want %v", c.pattern, c.path, got, ok, c.want)
		}
	}
}
