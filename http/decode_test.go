package dlmhttp

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"
)

// duplicateKeyByTokens is duplicateKey written the slow, obvious way, with
// encoding/json's tokenizer: the reference the scan is checked against.
func duplicateKeyByTokens(b []byte) (string, bool) {
	type open struct {
		keys    map[string]bool // nil in an array
		wantKey bool
	}
	var stack []open
	d := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.Token()
		if err != nil {
			return "", false
		}
		top := len(stack) - 1
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, open{keys: map[string]bool{}, wantKey: true})
				continue
			case '[':
				stack = append(stack, open{})
				continue
			}
			stack, top = stack[:top], top-1
		case string:
			if top >= 0 && stack[top].wantKey {
				if stack[top].keys[t] {
					return t, true
				}
				stack[top].keys[t], stack[top].wantKey = true, false
				continue
			}
		}
		if top >= 0 && stack[top].keys != nil {
			stack[top].wantKey = true
		}
	}
}

var duplicateKeySeeds = []string{
	`{}`,
	`{"a":1,"b":2}`,
	`{"a":1,"a":2}`,
	`{"a":{"b":1},"b":2}`,
	`{"a":[{"x":1,"x":2}]}`,
	`{"a":[{"x":1},{"x":2}]}`,
	`{"a":"\"a\":","b":"}{,"}`,
	`{"a":1,"\u0061":2}`,
	`{"k\\":1,"k":2}`,
	`{"k\\":1,"k\\":2}`,
	`[{"a":[1,[2,{"b":3,"c":{"b":4}}]],"b":[]}]`,
	` { "a" : 1 , "a" : 2 } `,
	`"a"`,
	`{"":1,"":2}`,
	"{\"\xb2\":0,\"\xb3\":0}", // invalid UTF-8: both keys decode to U+FFFD
	`{"é":1,"\u00e9":2}`,
}

func TestDuplicateKey(t *testing.T) {
	for _, s := range duplicateKeySeeds {
		gotKey, got := duplicateKey([]byte(s))
		wantKey, want := duplicateKeyByTokens([]byte(s))
		if got != want || gotKey != wantKey {
			t.Errorf("duplicateKey(%s) = %q, %v; want %q, %v", s, gotKey, got, wantKey, want)
		}
	}
}

func FuzzDuplicateKey(f *testing.F) {
	for _, s := range duplicateKeySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !json.Valid([]byte(s)) {
			return // duplicateKey is only ever given parsed JSON
		}
		gotKey, got := duplicateKey([]byte(s))
		wantKey, want := duplicateKeyByTokens([]byte(s))
		if got != want || gotKey != wantKey {
			t.Errorf("duplicateKey(%s) = %q, %v; want %q, %v", s, gotKey, got, wantKey, want)
		}
	})
}

var splitObjectSeeds = []string{
	`{}`,
	` { } `,
	`{"a":1,"b":"x","c":[1,{"d":"}"}],"e":{"f":[]},"g":null,"h":true,"i":-1.5e3}`,
	"{ \"a\" :\t1 ,\n\"b\" : \"\\\"\" \r}",
	`{"k\"":"v\\","":0}`,
	"{\"\xb2\":0}",
	`{"a":1,"a":2}`,
}

// FuzzSplitObject checks splitObject against encoding/json on valid objects.
func FuzzSplitObject(f *testing.F) {
	for _, s := range splitObjectSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := bytes.TrimSpace([]byte(s))
		if !json.Valid(b) || len(b) == 0 || b[0] != '{' {
			return // splitObject is only ever given one parsed object
		}
		var want object
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if got := splitObject(b); !maps.EqualFunc(got, want, func(x, y json.RawMessage) bool { return bytes.Equal(x, y) }) {
			t.Errorf("splitObject(%s) = %q; want %q", b, got, want)
		}
	})
}

// TestFieldPlain checks the decoder-free paths of object.field against
// encoding/json.
func TestFieldPlain(t *testing.T) {
	for _, raw := range []string{`"a/b-c_1.2"`, `""`, `"a\"b"`, `"é"`, `"<&>"`, `"a\u0041"`, `7`, `-0`, `9223372036854775807`, `9223372036854775808`, `1e3`, `1.0`, `"5"`} {
		o := object{"f": json.RawMessage(raw)}
		var s, ws string
		_, err := o.field("f", &s, "a string")
		werr := json.Unmarshal([]byte(raw), &ws)
		if s != ws || (err == nil) != (werr == nil) {
			t.Errorf("string %s: %q, %v; want %q, %v", raw, s, err, ws, werr)
		}
		var n, wn int64
		_, err = o.field("f", &n, "an integer")
		werr = json.Unmarshal([]byte(raw), &wn)
		if n != wn || (err == nil) != (werr == nil) {
			t.Errorf("int %s: %d, %v; want %d, %v", raw, n, err, wn, werr)
		}
	}
}
