package dlmhttp

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/dlmhq/dlm"
)

// access says who may call a route.
type access uint8

const (
	// public routes need no key: health checks and the dashboard's files.
	public access = iota
	// tenantKey routes act as one tenant; the admin key gets 403.
	tenantKey
	// tenantOrAdmin routes read locks: a tenant key reads its own
	// namespace (and the global one), the admin key names a tenant with
	// ?tenant=NAME or reads scope=global.
	tenantOrAdmin
	// adminKey routes need the admin key; tenant keys get 403.
	adminKey
)

// route is one row of the route table.
//
// A pattern is a path of literal segments and parameters. "{x}" matches one
// segment. "{x...}" matches one or more segments joined by "/", so that a lock
// name may contain an unencoded "/" (see pattern.match). Parameters are
// percent-decoded before the handler sees them.
type route struct {
	method  string
	pattern string
	access  access
	query   []string // the query parameters the route accepts
	serve   func(h *Handler, w http.ResponseWriter, r *http.Request, c *call) error
}

// routeTable lists every route, most specific first. /metrics, which needs
// no dlm key, is added with WithRoute.
func routeTable() []route {
	return []route{
		{"GET", "/healthz", public, nil, (*Handler).healthz},
		{"GET", "/readyz", public, nil, (*Handler).readyz},
		{"GET", "/", public, nil, (*Handler).dashboardPage},
		{"GET", "/dashboard/{file}", public, nil, (*Handler).dashboardFile},
		{"GET", "/v1/openapi.json", public, nil, (*Handler).openapi},

		{"POST", "/v1/acquire", tenantKey, nil, (*Handler).acquireMany},
		{"POST", "/v1/locks/{name...}/acquire", tenantKey, nil, (*Handler).acquire},
		{"POST", "/v1/locks/{name...}/force-release", adminKey, []string{"scope", "tenant"}, (*Handler).forceRelease},
		{"GET", "/v1/locks", tenantOrAdmin, []string{"prefix", "scope", "limit", "cursor", "tenant"}, (*Handler).list},
		{"GET", "/v1/locks/{name...}", tenantOrAdmin, []string{"scope", "tenant"}, (*Handler).inspect},

		{"GET", "/v1/leases/{lease_id}", tenantKey, nil, (*Handler).getLease},
		{"POST", "/v1/leases/{lease_id}/renew", tenantKey, nil, (*Handler).renew},
		{"DELETE", "/v1/leases/{lease_id}", tenantKey, nil, (*Handler).release},

		{"GET", "/v1/events", tenantOrAdmin, []string{"name", "prefix", "scope", "since", "limit", "tenant"}, (*Handler).events},
		{"GET", "/v1/watch", tenantOrAdmin, []string{"name", "prefix", "scope", "since", "tenant"}, (*Handler).watch},
		{"GET", "/v1/session", tenantKey, nil, (*Handler).session},

		{"POST", "/v1/tenants", adminKey, nil, (*Handler).createTenant},
		{"GET", "/v1/tenants", adminKey, nil, (*Handler).listTenants},
		{"POST", "/v1/tenants/{tenant}/keys", adminKey, nil, (*Handler).createKey},
		{"DELETE", "/v1/tenants/{tenant}/keys/{key_id}", adminKey, nil, (*Handler).revokeKey},
	}
}

// find returns the route for method and the escaped path with its decoded
// parameters. If the path is known but not for method it returns the
// methods that are allowed instead.
//
// Routes are matched on method and path together, so among the routes of
// one method a path is never ambiguous: GET /v1/locks/a/acquire inspects the
// lock "a/acquire", and POST to it acquires the lock "a". A lock whose name
// ends in "/acquire" or "/force-release" is acquired or force-released with
// its slashes percent-encoded, as clients do anyway.
func (h *Handler) find(method, path string) (rt *route, params pathParams, allow []string, err error) {
	if !strings.HasPrefix(path, "/") {
		return nil, nil, nil, nil
	}
	segs := strings.Split(path[1:], "/")
	for i := range h.routes {
		r := &h.routes[i]
		raw, ok := h.patterns[i].match(segs)
		if !ok {
			continue
		}
		if r.method != method {
			if !slices.Contains(allow, r.method) {
				allow = append(allow, r.method)
			}
			continue
		}
		for j := range raw {
			if raw[j].value, err = url.PathUnescape(raw[j].value); err != nil {
				return nil, nil, nil, dlm.Invalid(raw[j].name, "malformed percent-encoding in the path")
			}
		}
		return r, raw, nil, nil
	}
	return nil, nil, allow, nil
}

// pathParams are a route's path parameters, in the pattern's order. A
// route has at most two, so a slice serves them with less garbage than a
// map, on every request.
type pathParams []pathParam

type pathParam struct{ name, value string }

// get returns the parameter called name, or "".
func (p pathParams) get(name string) string {
	for _, x := range p {
		if x.name == name {
			return x.value
		}
	}
	return ""
}

// pattern is a route's pattern split into segments: literals, and
// parameters as their names ("{name...}" → "name").
type pattern struct {
	segs   []string
	params []bool // segs[i] is a parameter's name
	rest   int    // index of the "{x...}" parameter, or -1
}

func parsePattern(p string) pattern {
	pt := pattern{segs: strings.Split(p[1:], "/"), rest: -1}
	pt.params = make([]bool, len(pt.segs))
	for i, seg := range pt.segs {
		name, ok := strings.CutPrefix(seg, "{")
		if !ok {
			continue
		}
		name = strings.TrimSuffix(name, "}")
		if n, ok := strings.CutSuffix(name, "..."); ok {
			name, pt.rest = n, i
		}
		pt.segs[i], pt.params[i] = name, true
	}
	return pt
}

// match matches an escaped path, split at "/" after its leading one,
// against the pattern and returns the raw (still escaped) parameters.
//
// Lock names: the API has clients percent-encode "/" in names (orders%2F42),
// and that always works. We are lenient and also accept the "/" unencoded
// (POST /v1/locks/orders/42/acquire is the lock "orders/42"): a "{x...}"
// parameter takes every segment that the literal segments after it do not
// need. The path is never cleaned: "a//b" is that name, an empty name is
// refused by validation with 400, and no request is ever redirected.
func (pt *pattern) match(segs []string) (pathParams, bool) {
	n := len(pt.segs)
	if pt.rest < 0 && len(segs) != n || pt.rest >= 0 && len(segs) < n {
		return nil, false
	}
	// Literals first: most routes fail on one, before any allocation.
	for i, p := range pt.segs {
		if !pt.params[i] && p != segs[pt.index(i, len(segs))] {
			return nil, false
		}
	}
	var params pathParams
	for i, name := range pt.segs {
		if !pt.params[i] {
			continue
		}
		if i == pt.rest {
			params = append(params, pathParam{name, strings.Join(segs[i:len(segs)-(n-1-i)], "/")})
		} else {
			params = append(params, pathParam{name, segs[pt.index(i, len(segs))]})
		}
	}
	return params, true
}

// index returns the path segment that pattern segment i, other than the
// "{x...}" one, matches in a path of n segments.
func (pt *pattern) index(i, n int) int {
	if pt.rest < 0 || i < pt.rest {
		return i
	}
	return n - (len(pt.segs) - i)
}
