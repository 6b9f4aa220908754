package dlmhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/dlmhq/dlm"
)

// object is a decoded JSON request body: each field's raw value by name.
//
// Decoding to raw values first, rather than straight into a struct, lets the
// handlers tell an omitted field (default) from a given one (validated, never
// replaced), reject unknown fields and nulls by name, and name the field in
// every error.
type object map[string]json.RawMessage

// readObject reads r's body, which must be empty (the same as {}) or one JSON
// object whose fields are all in allowed. The Content-Type header is not
// checked: curl -d sends form encoding by default, and the body itself says
// whether it is JSON.
//
// Errors: payload_too_large over dlm.MaxRequestBody; invalid_argument with
// field "body" for anything that is not one JSON object, or naming the
// unknown field.
func readObject(w http.ResponseWriter, r *http.Request, allowed ...string) (object, error) {
	if r.ContentLength > dlm.MaxRequestBody {
		return nil, tooLarge()
	}
	// The handler bounds how long this may take (WithBodyTimeout).
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, dlm.MaxRequestBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, tooLarge()
	case err != nil:
		return nil, dlm.Invalid("body", "could not be read: %v", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return object{}, nil
	}
	return decodeObject(b, allowed...)
}

// decodeObject decodes b, a request body or a session message with its
// space trimmed, as readObject does.
func decodeObject(b []byte, allowed ...string) (object, error) {
	if len(b) == 0 || b[0] != '{' {
		return nil, dlm.Invalid("body", "must be a JSON object")
	}
	if !json.Valid(b) {
		var o object
		err := json.Unmarshal(b, &o) // for its message
		return nil, dlm.Invalid("body", "malformed JSON: %v", err)
	}
	o := splitObject(b)
	if key, ok := duplicateKey(b); ok {
		// encoding/json lets the last one win: a body that says two
		// things must not quietly mean one of them.
		if key == "" {
			key = "body"
		}
		return nil, dlm.Invalid(key, "given more than once")
	}
	// Report the first unknown field by name order, so the answer does not
	// depend on map iteration.
	var unknown []string
	for k := range o {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		if unknown[0] == "" {
			return nil, dlm.Invalid("body", "unknown field \"\" (allowed: %v)", allowed)
		}
		return nil, dlm.Invalid(unknown[0], "unknown field (allowed: %v)", allowed)
	}
	return o, nil
}

// duplicateKey returns the first key that appears twice in one object of
// the valid JSON document b, at any depth, and whether there is one. It is
// a plain scan, not a tokenizer: b has been parsed already, so only braces,
// brackets, commas and strings need telling apart.
func duplicateKey(b []byte) (string, bool) {
	type open struct {
		keys   [][]byte // in an object; nil in an array
		object bool
	}
	var buf [4]open
	stack := buf[:0]
	wantKey := false
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{':
			stack = append(stack, open{object: true})
			wantKey = true
		case '[':
			stack = append(stack, open{})
			wantKey = false
		case '}', ']':
			stack = stack[:len(stack)-1]
			wantKey = false
		case ',':
			wantKey = stack[len(stack)-1].object
		case '"':
			end, decode := stringEnd(b, i)
			if wantKey {
				key := b[i+1 : end]
				if decode {
					var k string
					json.Unmarshal(b[i:end+1], &k) // valid: b was parsed
					key = []byte(k)
				}
				top := &stack[len(stack)-1]
				for _, seen := range top.keys {
					if bytes.Equal(seen, key) {
						return string(key), true
					}
				}
				top.keys = append(top.keys, key)
				wantKey = false
			}
			i = end
		}
	}
	return "", false
}

// splitObject returns the fields of b, one valid JSON object, as
// json.Unmarshal into an object would (the last of a repeated key wins),
// each value the bytes of b it spans. One scan, with no copies: the
// decoder's reflection over a map of raw values costs more than the rest
// of a request's decoding.
func splitObject(b []byte) object {
	o := object{}
	for i := skipSpace(b, 1); i < len(b) && b[i] == '"'; {
		end, decode := stringEnd(b, i)
		key := string(b[i+1 : end])
		if decode {
			json.Unmarshal(b[i:end+1], &key) // valid: b was parsed
		}
		i = skipSpace(b, skipSpace(b, end+1)+1) // past the colon
		vend := valueEnd(b, i)
		o[key] = json.RawMessage(b[i:vend])
		if i = skipSpace(b, vend); i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return o
}

// skipSpace returns the index of the first byte of b from i on that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value that starts at b[i]
// in the valid document b.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end + 1
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i, _ = stringEnd(b, i)
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	// A number, true, false or null.
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && skipSpace(b, i) == i {
		i++
	}
	return i
}

// stringEnd returns the index of the quote that closes the JSON string
// opening at b[start], and whether the string must be decoded to compare
// it as encoding/json does: it has escapes, or bytes outside ASCII (which
// may be invalid UTF-8, each decoded as U+FFFD).
func stringEnd(b []byte, start int) (end int, decode bool) {
	for i := start + 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\\':
			decode = true
			i++
		case c == '"':
			return i, decode
		case c >= 0x80:
			decode = true
		}
	}
	return len(b) - 1, decode
}

func tooLarge() error {
	return dlm.Errorf(dlm.CodePayloadTooLarge, "request body is larger than %d bytes", dlm.MaxRequestBody)
}

// field decodes the field name into v and reports whether it was given. An
// explicit null is not the same as omitting the field: it is refused.
func (o object) field(name string, v any, what string) (bool, error) {
	raw, ok := o[name]
	if !ok {
		return false, nil
	}
	if string(raw) == "null" {
		return true, dlm.Invalid(name, "must not be null (omit the field for its default)")
	}
	// The usual fields, plain strings and integers, need no decoder.
	switch p := v.(type) {
	case *string:
		if s, ok := plainString(raw); ok {
			*p = s
			return true, nil
		}
	case *int64:
		if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			*p = n // raw is valid JSON, so no sign or base ParseInt alone would take
			return true, nil
		}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, dlm.Invalid(name, "must be %s", what)
	}
	return true, nil
}

// plainString returns the JSON string raw as is if it has no escapes and
// only printable ASCII, which is all encoding/json would do with it.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if c < 0x20 || c >= 0x7f || c == '\\' || c == '"' {
			return "", false
		}
	}
	return string(raw[1 : len(raw)-1]), true
}

func (o object) string(name string) (string, bool, error) {
	var s string
	given, err := o.field(name, &s, "a string")
	return s, given, err
}

func (o object) int(name string) (int64, bool, error) {
	var n int64
	given, err := o.field(name, &n, "an integer")
	return n, given, err
}

func (o object) bool(name string) (bool, bool, error) {
	var b bool
	given, err := o.field(name, &b, "true or false")
	return b, given, err
}

// millis converts a count of milliseconds from the wire into a Duration.
// Values too large to represent saturate, so that the engine's range check
// refuses them with its usual message instead of seeing an overflowed value.
func millis(ms int64) time.Duration {
	const maxMs = math.MaxInt64 / int64(time.Millisecond)
	switch {
	case ms > maxMs:
		return math.MaxInt64
	case ms < -maxMs:
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// query is a request's query string, validated against the parameters a
// route accepts.
type query map[string]string

// parseQuery checks that r's query string names only allowed parameters, each
// at most once.
func parseQuery(r *http.Request, allowed []string) (query, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, dlm.Invalid("query", "malformed query string: %v", err)
	}
	q := query{}
	for k, vs := range vals {
		if !slices.Contains(allowed, k) {
			field := k
			if field == "" {
				field = "query"
			}
			if len(allowed) == 0 {
				return nil, dlm.Invalid(field, "unknown query parameter %q: this route takes none", k)
			}
			return nil, dlm.Invalid(field, "unknown query parameter %q (allowed: %v)", k, allowed)
		}
		if len(vs) > 1 {
			return nil, dlm.Invalid(k, "given %d times", len(vs))
		}
		q[k] = vs[0]
	}
	return q, nil
}

// get returns parameter name and whether it was given.
func (q query) get(name string) (string, bool) {
	v, ok := q[name]
	return v, ok
}

// int parses an integer parameter between lo and hi; it returns def when the
// parameter is absent.
func (q query) int(name string, lo, hi, def int) (int, error) {
	s, ok := q[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, dlm.Invalid(name, "must be an integer between %d and %d", lo, hi)
	}
	return n, nil
}
